"""aetcd_breaker."""
