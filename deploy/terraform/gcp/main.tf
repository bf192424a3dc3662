# Seed 003's load-balancer fixes, done right: 24 h backend timeout, GENERATED_COOKIE affinity with
# a 24 h TTL, and WebSocket path rules. The global external Application LB passes Upgrade and
# Connection itself; no custom headers are needed (setting `Connection: upgrade` on every request,
# as the seed did, is wrong for plain HTTP requests).
locals {
  ws_paths = ["/ws", "/ws/*", "/websocket", "/websocket/*"]
}

resource "google_compute_health_check" "waygate" {
  project             = var.project
  name                = "${var.name}-readyz"
  check_interval_sec  = 5
  timeout_sec         = 3
  healthy_threshold   = 2
  unhealthy_threshold = 2

  http_health_check {
    port_name    = "http"
    request_path = var.health_check_path
  }
}

resource "google_compute_backend_service" "waygate" {
  project               = var.project
  name                  = "${var.name}-backend"
  protocol              = "HTTP"
  port_name             = "http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  timeout_sec           = var.backend_timeout_sec
  health_checks         = [google_compute_health_check.waygate.id]

  session_affinity        = "GENERATED_COOKIE"
  affinity_cookie_ttl_sec = var.session_affinity_ttl_sec

  connection_draining_timeout_sec = var.connection_draining_timeout_sec

  custom_request_headers = ["X-Forwarded-Proto: https"]

  backend {
    group           = var.instance_group
    balancing_mode  = "UTILIZATION"
    capacity_scaler = 1.0
  }

  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

resource "google_compute_url_map" "waygate" {
  project         = var.project
  name            = "${var.name}-urlmap"
  default_service = google_compute_backend_service.waygate.id

  host_rule {
    hosts        = ["*"]
    path_matcher = "waygate"
  }

  path_matcher {
    name            = "waygate"
    default_service = google_compute_backend_service.waygate.id

    path_rule {
      paths   = local.ws_paths
      service = google_compute_backend_service.waygate.id

      route_action {
        timeout {
          seconds = var.websocket_timeout_sec
        }
      }
    }
  }
}

resource "google_compute_managed_ssl_certificate" "waygate" {
  project = var.project
  name    = "${var.name}-cert"

  managed {
    domains = var.domains
  }
}

resource "google_compute_target_https_proxy" "waygate" {
  project          = var.project
  name             = "${var.name}-https"
  url_map          = google_compute_url_map.waygate.id
  ssl_certificates = [google_compute_managed_ssl_certificate.waygate.id]
}

resource "google_compute_global_address" "waygate" {
  project = var.project
  name    = "${var.name}-ip"
}

resource "google_compute_global_forwarding_rule" "waygate" {
  project               = var.project
  name                  = "${var.name}-https"
  target                = google_compute_target_https_proxy.waygate.id
  port_range            = "443"
  ip_address            = google_compute_global_address.waygate.address
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
