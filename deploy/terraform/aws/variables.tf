variable "name" {
  description = "Name prefix for every resource."
  type        = string
  default     = "waygate"
}

variable "image" {
  description = "waygate container image (deploy/docker/Dockerfile)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the ALB and the tasks."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the ALB (at least two AZs)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the ECS tasks."
  type        = list(string)
}

variable "ecs_cluster_arn" {
  description = "Existing ECS cluster the service runs in."
  type        = string
}

variable "app_port" {
  description = "Main listener (WEBSOCKET_PORT): HTTP API, every WS path, /health, /readyz."
  type        = number
  default     = 8080
}

variable "gateway_ws_port" {
  description = "Standalone WS listener port (GATEWAY_WS_PORT); the WS target group points here."
  type        = number
  default     = 3001
}

variable "gateway_ws_health_path" {
  description = "Health path of the standalone WS listener (GATEWAY_WS_HEALTH_PATH)."
  type        = string
  default     = "/health"
}

variable "https_listener_arn" {
  description = "Optional HTTPS listener; when set, a rule forwards the WS paths to the WS target group."
  type        = string
  default     = ""
}

variable "ws_listener_rule_priority" {
  description = "Priority of the WS path listener rule on the HTTPS listener."
  type        = number
  default     = 100
}

variable "gateway_ws_public_url" {
  description = "GATEWAY_WS_PUBLIC_URL returned as wsEndpoint (recommended), e.g. wss://gw.example.com/api/gateway/ws."
  type        = string
  default     = ""
}

variable "gateway_ws_public_host" {
  description = "GATEWAY_WS_PUBLIC_HOST (alternative endpoint strategy with port and path)."
  type        = string
  default     = ""
}

variable "gateway_ws_public_port" {
  description = "GATEWAY_WS_PUBLIC_PORT (alternative endpoint strategy)."
  type        = string
  default     = ""
}

variable "gateway_ws_path" {
  description = "GATEWAY_WS_PATH (alternative endpoint strategy)."
  type        = string
  default     = "/api/gateway/ws"
}

variable "gateway_dispatch_poll_ms" {
  description = "GATEWAY_DISPATCH_POLL_MS (minimum 100)."
  type        = number
  default     = 500

  validation {
    condition     = var.gateway_dispatch_poll_ms >= 100
    error_message = "gateway_dispatch_poll_ms must be at least 100."
  }
}

variable "drain_timeout_seconds" {
  description = "TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS; the container stopTimeout is this plus 15 s."
  type        = number
  default     = 30
}

variable "alb_idle_timeout" {
  description = "ALB idle timeout in seconds (max 4000); server heartbeats every 25 s keep sockets alive."
  type        = number
  default     = 3600
}

variable "desired_count" {
  description = "Tasks; more than one needs Postgres DATABASE_URL and REDIS_URL (cluster mode)."
  type        = number
  default     = 2
}

variable "task_cpu" {
  type    = number
  default = 512
}

variable "task_memory" {
  type    = number
  default = 1024
}

variable "secrets" {
  description = "Map of env var name to Secrets Manager / SSM ARN (DATABASE_URL, REDIS_URL, AMQP_URL, AGENT_CONTROL_PLANE_TOKEN, WAYGATE_JWT_SECRET, ...)."
  type        = map(string)
  default     = {}
}

variable "extra_environment" {
  description = "Further SPEC §2 variables as plain environment."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  type    = number
  default = 14
}
