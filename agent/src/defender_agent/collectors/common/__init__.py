"""Code the collectors share: following files, syslog framing, source timestamps,
auth-log patterns. Shipped in every build, whatever collectors it selects."""
