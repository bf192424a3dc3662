variable "project" {
  description = "GCP project id."
  type        = string
}

variable "name" {
  description = "Name prefix for every resource."
  type        = string
  default     = "waygate"
}

variable "instance_group" {
  description = "Instance group (or NEG) self link serving waygate on named port http (8080)."
  type        = string
}

variable "domains" {
  description = "Domains of the managed certificate."
  type        = list(string)
}

variable "backend_timeout_sec" {
  description = "Backend service timeout: for WebSockets, the longest a connection may live (24 h)."
  type        = number
  default     = 86400
}

variable "session_affinity_ttl_sec" {
  description = "GENERATED_COOKIE affinity lifetime (24 h)."
  type        = number
  default     = 86400
}

variable "websocket_timeout_sec" {
  description = "Route timeout of the WebSocket path rule (24 h)."
  type        = number
  default     = 86400
}

variable "health_check_path" {
  description = "Readiness path: 503 while draining, so the LB stops sending new sockets."
  type        = string
  default     = "/readyz"
}

variable "connection_draining_timeout_sec" {
  description = "Matches TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS."
  type        = number
  default     = 30
}
