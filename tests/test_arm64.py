"""The emulated aarch64 userland's pieces that need no emulation: mirror, cpuinfo, tools, mounts, pip.

The end-to-end check of a bundle under qemu-user is in test_deploy.py (it reuses the trained bundles).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner

from edgecompress.cli import cli
from edgecompress.deploy import arm64
from edgecompress.deploy.emulated import interpreter_requirements
from edgecompress.errors import RuntimeUnavailableError, UsageError


def test_mirror_is_read_from_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert arm64.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_is_read_from_a_one_line_list_else_debian(tmp_path):
    assert arm64.debian_mirror(tmp_path) == arm64.DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text("# deb http://old.example/debian bookworm main\n"
                                           "deb [arch=amd64] http://list.example/debian bookworm main contrib\n")
    assert arm64.debian_mirror(tmp_path) == "http://list.example/debian"


@pytest.mark.parametrize(("name", "part", "core"), [("pi4", "0xd08", "cortex-a72"), ("pi5", "0xd0b", "cortex-a76")])
def test_fake_cpuinfo_describes_the_pi(name, part, core):
    cpu = arm64.get_cpu(name)
    text = cpu.cpuinfo(2)
    assert cpu.qemu_cpu == core and "max" not in cpu.qemu_cpu  # trap 2: never qemu's SME-capable default
    assert text.count("processor\t:") == 2 and text.count(f"CPU part\t: {part}") == 2
    assert "CPU implementer\t: 0x41" in text
    assert ("asimddp" in text) is (name == "pi5")  # the A76 has the dot-product instructions XNNPACK uses


def test_unknown_cpu_is_a_usage_error():
    with pytest.raises(UsageError, match="pi4, pi5"):
        arm64.get_cpu("pi3")


def test_missing_tools_name_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(arm64.shutil, "which", lambda command: None if command == "debootstrap" else "/usr/bin/x")
    with pytest.raises(RuntimeUnavailableError) as caught:
        arm64.require_tools()
    assert "needs debootstrap" in str(caught.value)
    assert "apt-get install -y qemu-user-static binfmt-support debootstrap" in str(caught.value)


def test_cli_arch_without_tools_is_one_line(monkeypatch, tmp_path):
    """The tools are checked before anything is built (after the bundle is verified: tests/test_bundle_trust.py);
    the error is one line with the command."""
    monkeypatch.setattr(arm64.shutil, "which", lambda command: None)
    monkeypatch.setattr("edgecompress.deploy.verify.verify_bundle", lambda directory, trust_bundle: ())
    monkeypatch.setattr("edgecompress.deploy.verify.read_bundle", lambda directory: {"deploy": {"binarized": False}})
    result = CliRunner().invoke(cli, ["deploy", "--check", str(tmp_path), "--arch", "aarch64"])
    assert result.exit_code == RuntimeUnavailableError.exit_code
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "make arm64-tools" in lines[0] and "Traceback" not in result.output


def test_arch_and_cpu_only_apply_to_check(tmp_path):
    result = CliRunner().invoke(cli, ["deploy", str(tmp_path / "m.tflite"), "--target", "rpi", "-o",
                                      str(tmp_path / "b"), "--cpu", "pi5"])
    assert result.exit_code == UsageError.exit_code and "--check" in result.output


def test_interpreter_requirements_swap_only_the_litert_pin():
    requirements = "# Raspberry Pi\nai-edge-litert==2.3.0\n# or tflite-runtime\nnumpy>=1.23.2,<2\n"
    assert interpreter_requirements(requirements, "tflite-runtime") == "tflite-runtime==2.14.0\nnumpy>=1.23.2,<2\n"
    assert interpreter_requirements(requirements, "ai-edge-litert") == "ai-edge-litert==2.3.0\nnumpy>=1.23.2,<2\n"


def test_pip_inside_gets_the_hosts_index_and_ca_but_not_its_wheel_folder(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nindex-url = https://registry.example/simple\ncert = {ca}\ntimeout = 60\n")
    for name in ("PIP_INDEX_URL", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PIP_DEFAULT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("HOME", str(tmp_path))  # no user pip.conf
    env, cert = arm64.host_pip_settings()
    assert env["PIP_INDEX_URL"] == "https://registry.example/simple" and env["PIP_DEFAULT_TIMEOUT"] == "60"
    assert cert == ca and "PIP_FIND_LINKS" not in env
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")  # the environment wins, as for pip
    assert arm64.host_pip_settings()[0]["PIP_INDEX_URL"] == "https://env.example/simple"


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_remove_tree_never_deletes_through_a_bind_mount(tmp_path):
    """Trap 3: a leftover bind mount under a root filesystem must not take the mounted files with it."""
    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "precious").write_text("host device node stand-in")
    root = tmp_path / "rootfs"
    (root / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host), str(root / "dev")], check=True)
    try:
        assert arm64.mounts_under(root) == [str(root / "dev")]
        arm64.remove_tree(root)
    finally:
        subprocess.run(["umount", str(root / "dev")], capture_output=True, check=False)
    assert not root.exists() and (host / "precious").read_text() == "host device node stand-in"
    assert arm64.mounts_under(tmp_path) == []
