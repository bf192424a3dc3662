output "gateway_ws_target_group_arn" {
  description = "WS target group (standalone listener on gateway_ws_port)."
  value       = aws_lb_target_group.ws.arn
}

output "app_target_group_arn" {
  value = aws_lb_target_group.app.arn
}

output "alb_dns_name" {
  value = aws_lb.this.dns_name
}

output "gateway_ws_listener_rule_arn" {
  description = "Empty when https_listener_arn is not set."
  value       = one(aws_lb_listener_rule.gateway_ws[*].arn)
}

output "ecs_service_name" {
  value = aws_ecs_service.this.name
}
