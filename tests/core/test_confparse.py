"""libvirt's configuration syntax and shell environment files, as the daemons read them."""

from __future__ import annotations

import pytest

from vmaudit.confparse import ConfSyntaxError, parse_env_file, parse_libvirt_conf

QEMU_CONF = r'''
# Master configuration file for the QEMU driver.
#vnc_listen = "0.0.0.0"
vnc_tls = 1
security_driver = [ "selinux", "apparmor" ]
user = "qemu"   # a trailing comment
group = 'kvm'
cgroup_device_acl = [
    "/dev/null", "/dev/full", "/dev/zero",
    # a comment inside a list
    "/dev/random", "/dev/urandom",
    "/dev/ptmx", "/dev/kvm",
]
migration_port_min = 0x31
namespaces = []
'''


def test_real_qemu_conf_syntax():
    conf = parse_libvirt_conf(QEMU_CONF)
    assert conf == {"vnc_tls": 1, "security_driver": ["selinux", "apparmor"], "user": "qemu", "group": "kvm",
                    "cgroup_device_acl": ["/dev/null", "/dev/full", "/dev/zero", "/dev/random",
                                          "/dev/urandom", "/dev/ptmx", "/dev/kvm"],
                    "migration_port_min": 0x31, "namespaces": []}
    assert "vnc_listen" not in conf  # commented out: the default applies


@pytest.mark.parametrize("text, line", [
    ('user = "qemu\n', 1),
    ('\n\nuser "qemu"\n', 3),
    ('a = [1, 2\nb = 3\n', 2),
    ('a = 1 2\n', 1),
])
def test_syntax_errors_name_the_line(text, line):
    with pytest.raises(ConfSyntaxError, match=f"line {line}"):
        parse_libvirt_conf(text)


def test_env_file():
    env = parse_env_file('# Debian\nlibvirtd_opts="--listen"\nexport LIBVIRTD_ARGS=\'--timeout 120\'\n'
                         'KRB5_KTNAME=/etc/libvirt/krb5.tab\nlibvirtd_opts=""\n')
    assert env == {"libvirtd_opts": "", "LIBVIRTD_ARGS": "--timeout 120", "KRB5_KTNAME": "/etc/libvirt/krb5.tab"}
