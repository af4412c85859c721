"""The compose tier (make compose-test): its own stack under Podman, never the native one."""
