#!/usr/bin/env bash
# Checks everything in deploy/ with offline tools: terraform fmt + HCL parse and seed assertions,
# cfn-lint, kustomize build + Kubernetes schema validation, promtool, dashboard and runbook links.
# Installs missing tools quietly (PyPI: python-hcl2, cfn-lint, kubernetes-validate; Debian:
# prometheus for promtool). Runs non-interactively (CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1

pip_need=()
python3 -c "import hcl2" 2>/dev/null || pip_need+=("python-hcl2>=4")
python3 -c "import yaml" 2>/dev/null || pip_need+=("PyYAML")
command -v cfn-lint >/dev/null || pip_need+=("cfn-lint")
command -v kubernetes-validate >/dev/null || pip_need+=("kubernetes-validate")
if ((${#pip_need[@]})); then
  python3 -m pip install --quiet --disable-pip-version-check "${pip_need[@]}" 2>&1 | grep -v "Running pip as the 'root'" || true
fi
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null; then
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; }) \
    || echo "promtool unavailable: alert rules get the Python structure check only"
fi

if command -v terraform >/dev/null; then
  echo "terraform fmt -check -recursive deploy/terraform"
  terraform fmt -check -recursive -diff deploy/terraform
else
  echo "terraform not installed: formatting not checked (HCL parse and assertions still run)"
fi

echo "cfn-lint deploy/cloudformation/ecs.yaml"
cfn-lint deploy/cloudformation/ecs.yaml

python3 scripts/check_deploy.py
