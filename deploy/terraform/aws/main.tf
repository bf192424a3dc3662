locals {
  ws_paths = ["/ws", "/ws/*", "/api/gateway/ws", "/api/gateway/ws/*"]

  environment = merge(
    {
      WEBSOCKET_HOST                         = "0.0.0.0"
      WEBSOCKET_PORT                         = tostring(var.app_port)
      GATEWAY_WS_PORT                        = tostring(var.gateway_ws_port)
      GATEWAY_WS_HEALTH_PATH                 = var.gateway_ws_health_path
      GATEWAY_WS_PATH                        = var.gateway_ws_path
      GATEWAY_DISPATCH_POLL_MS               = tostring(var.gateway_dispatch_poll_ms)
      TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS = tostring(var.drain_timeout_seconds)
      WAYGATE_CLUSTER                        = var.desired_count > 1 ? "true" : "false"
      WAYGATE_LOG_FORMAT                     = "json"
    },
    var.gateway_ws_public_url != "" ? { GATEWAY_WS_PUBLIC_URL = var.gateway_ws_public_url } : {},
    var.gateway_ws_public_host != "" ? { GATEWAY_WS_PUBLIC_HOST = var.gateway_ws_public_host } : {},
    var.gateway_ws_public_port != "" ? { GATEWAY_WS_PUBLIC_PORT = var.gateway_ws_public_port } : {},
    var.extra_environment,
  )
}

data "aws_region" "current" {}

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "waygate ALB"
  vpc_id      = var.vpc_id

  ingress {
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "task" {
  name        = "${var.name}-task"
  description = "waygate tasks: only the ALB reaches them"
  vpc_id      = var.vpc_id

  ingress {
    from_port       = var.app_port
    to_port         = var.app_port
    protocol        = "tcp"
    security_groups = [aws_security_group.alb.id]
  }

  ingress {
    from_port       = var.gateway_ws_port
    to_port         = var.gateway_ws_port
    protocol        = "tcp"
    security_groups = [aws_security_group.alb.id]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_lb" "this" {
  name               = var.name
  load_balancer_type = "application"
  subnets            = var.public_subnet_ids
  security_groups    = [aws_security_group.alb.id]

  # Long-lived WebSockets: the ALB closes a connection idle this long (heartbeats every 25 s).
  idle_timeout = var.alb_idle_timeout
}

resource "aws_lb_target_group" "app" {
  name                 = "${var.name}-app"
  port                 = var.app_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = var.drain_timeout_seconds

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group" "ws" {
  name                 = "${var.name}-ws"
  port                 = var.gateway_ws_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = var.drain_timeout_seconds

  health_check {
    path                = var.gateway_ws_health_path
    port                = tostring(var.gateway_ws_port)
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  stickiness {
    type            = "lb_cookie"
    cookie_duration = 86400
    enabled         = false
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
}

# Seed 000: path-based WS routing on the HTTPS listener when its ARN is given.
resource "aws_lb_listener_rule" "gateway_ws" {
  count        = var.https_listener_arn != "" ? 1 : 0
  listener_arn = var.https_listener_arn
  priority     = var.ws_listener_rule_priority

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ws.arn
  }

  condition {
    path_pattern {
      values = local.ws_paths
    }
  }
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "secrets" {
  count = length(var.secrets) > 0 ? 1 : 0

  statement {
    actions   = ["secretsmanager:GetSecretValue", "ssm:GetParameters"]
    resources = values(var.secrets)
  }
}

resource "aws_iam_role_policy" "secrets" {
  count  = length(var.secrets) > 0 ? 1 : 0
  name   = "${var.name}-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets[0].json
}

# The task itself calls no AWS API: its role has no policies.
resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([
    {
      name                   = "waygate"
      image                  = var.image
      command                = ["serve"]
      essential              = true
      readonlyRootFilesystem = false
      user                   = "10001:10001"
      stopTimeout            = var.drain_timeout_seconds + 15
      portMappings = [
        { containerPort = var.app_port, protocol = "tcp" },
        { containerPort = var.gateway_ws_port, protocol = "tcp" },
      ]
      environment = [for k, v in local.environment : { name = k, value = v }]
      secrets     = [for k, v in var.secrets : { name = k, valueFrom = v }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "waygate"
        }
      }
    }
  ])
}

resource "aws_ecs_service" "this" {
  name                              = var.name
  cluster                           = var.ecs_cluster_arn
  task_definition                   = aws_ecs_task_definition.this.arn
  desired_count                     = var.desired_count
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = 30

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  network_configuration {
    subnets         = var.private_subnet_ids
    security_groups = [aws_security_group.task.id]
  }

  # Both target groups: the app (8080) and the standalone WS listener (3001).
  load_balancer {
    target_group_arn = aws_lb_target_group.app.arn
    container_name   = "waygate"
    container_port   = var.app_port
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.ws.arn
    container_name   = "waygate"
    container_port   = var.gateway_ws_port
  }

  depends_on = [aws_lb_listener.http]
}
