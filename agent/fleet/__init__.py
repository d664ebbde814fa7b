"""Central collection over SSH (vmaudit collect) and the fleet checks."""
