"""vmaudit: audit KVM/libvirt hypervisors against eight hardening measures for consolidated hosts."""

__version__ = "0.1.0"
