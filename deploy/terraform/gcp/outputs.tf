output "ip_address" {
  value = google_compute_global_address.waygate.address
}

output "backend_service_id" {
  value = google_compute_backend_service.waygate.id
}
