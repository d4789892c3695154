"""Bundles are verified before anything in them runs: manifest, scripts, requirements, archives."""

from __future__ import annotations

import io
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecompress.cli import cli
from edgecompress.deploy import archive as archive_module
from edgecompress.deploy import build_bundle
from edgecompress.deploy.archive import extract_archive
from edgecompress.deploy.manifest import MANIFEST_FILE, ManifestError, verify_manifest, write_manifest
from edgecompress.deploy.verify import foreign_files, verify_bundle
from edgecompress.errors import UsageError, ValidationError


@pytest.fixture(scope="module")
def bundle(tiny_int8, tmp_path_factory) -> Path:
    return build_bundle(tiny_int8, "linux", tmp_path_factory.mktemp("trust") / "tiny-bundle", archive=True).path


def _copy(bundle: Path, where: Path) -> Path:
    copy = where / bundle.name
    shutil.copytree(bundle, copy, symlinks=True)
    return copy


def _one_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_manifest_lists_every_file(bundle):
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert manifest["format"] == "edgecompress-bundle-manifest/1"
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {MANIFEST_FILE}
    assert set(manifest["files"]) == on_disk and "run.py" in on_disk
    assert verify_manifest(bundle).ok and foreign_files(bundle) == []


def test_manifest_names_changed_missing_unexpected_and_links(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    (copy / "bench.py").write_text((copy / "bench.py").read_text() + "\n# edited\n")
    (copy / "sample.npy").unlink()
    (copy / "numpy.py").write_text("raise SystemExit('imported in numpy's place')\n")
    (copy / "README.md").unlink()
    (copy / "README.md").symlink_to(tmp_path / "elsewhere.md")
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"cache")
    check = verify_manifest(copy)
    assert (check.changed, check.missing, check.unexpected) == (("bench.py", "README.md"), ("sample.npy",), ("numpy.py",))
    assert check.caches == ("__pycache__/run.cpython-311.pyc",) and not check.ok
    assert "changed: bench.py, README.md" in check.describe()


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.unlink(),
        lambda m: m.write_text("{not json"),
        lambda m: m.write_text(json.dumps({"format": "other/1", "files": {}})),
        lambda m: m.write_text(json.dumps({"format": "edgecompress-bundle-manifest/1", "files": {"../run.py": "0" * 64}})),
        lambda m: m.write_text(json.dumps({"format": "edgecompress-bundle-manifest/1", "files": {"run.py": "xyz"}})),
    ],
)
def test_an_unusable_manifest_is_refused(bundle, tmp_path, damage):
    copy = _copy(bundle, tmp_path)
    damage(copy / MANIFEST_FILE)
    with pytest.raises(ManifestError):
        verify_manifest(copy)
    with pytest.raises(ValidationError, match="manifest.json"):
        verify_bundle(copy)


def test_a_rehashed_manifest_does_not_vouch_for_a_foreign_script(bundle, tmp_path):
    """Tampering and recomputing the manifest still fails: scripts must equal the toolkit's own copies."""
    copy = _copy(bundle, tmp_path)
    (copy / "preprocessing.py").write_text((copy / "preprocessing.py").read_text() + "\nimport os\n")
    (copy / "requirements.txt").write_text("ai-edge-litert==2.3.0\nsome-package-from-elsewhere\n")
    write_manifest(copy)
    assert verify_manifest(copy).ok
    problems = foreign_files(copy)
    assert problems == ["preprocessing.py (differs from this toolkit's copy)",
                        "requirements.txt (not what the toolkit writes for its target)"]
    for planted in ("numpy.cpython-311-x86_64-linux-gnu.so", "litert_model.pyc", "sub/sitecustomize.py"):
        (copy / planted).parent.mkdir(exist_ok=True)
        (copy / planted).write_bytes(b"imported in place of the real module")
    write_manifest(copy)
    assert [p for p in foreign_files(copy) if "never writes" in p] == [
        "litert_model.pyc (code the toolkit never writes)",
        "numpy.cpython-311-x86_64-linux-gnu.so (code the toolkit never writes)",
        "sub/sitecustomize.py (code the toolkit never writes)",
    ]


def test_tampered_run_py_is_refused_without_running_and_runs_only_when_trusted(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    marker = tmp_path / "marker-written-by-run-py"
    source = (copy / "run.py").read_text()
    assert "\nimport json\n" in source
    (copy / "run.py").write_text(source.replace("\nimport json\n", f"\nimport json\nopen({str(marker)!r}, 'w').write('ran')\n", 1))
    result = CliRunner().invoke(cli, ["deploy", "--check", str(copy), "--runs", "3"])
    assert result.exit_code == ValidationError.exit_code
    line = _one_line(result)
    assert "run.py (changed)" in line and "none of its scripts was run" in line and "--trust-bundle" in line
    assert not marker.exists()

    result = CliRunner().invoke(cli, ["deploy", "--check", str(copy), "--runs", "3", "--trust-bundle"])
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "ran"
    assert "ran foreign code" in result.output and "run.py (changed)" in result.output
    assert "foreign code ran: --trust-bundle" in result.output


def test_emulated_check_refuses_a_tampered_bundle_before_running_it(bundle, tmp_path):
    """--arch aarch64 runs the scripts too (as root in the emulated userland): verified first, like the native check."""
    copy = _copy(bundle, tmp_path)
    (copy / "bench.py").write_text((copy / "bench.py").read_text() + "\nopen('/tmp/x', 'w')\n")
    result = CliRunner().invoke(cli, ["deploy", "--check", str(copy), "--arch", "aarch64", "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == ValidationError.exit_code
    assert "bench.py (changed)" in _one_line(result) and "none of its scripts was run" in result.output
    assert not (tmp_path / "c").exists()  # refused before any root filesystem or venv was made


def test_on_device_self_check_reads_the_manifest_deploy_wrote(bundle, tmp_path, monkeypatch):
    """run.py --self-check's file check, without an interpreter: the manifest as written, code planted beside run.py."""
    import importlib.util

    from edgecompress.deploy.bundle import METADATA_FILE

    copy = _copy(bundle, tmp_path)
    monkeypatch.syspath_prepend(str(copy))
    spec = importlib.util.spec_from_file_location("bundle_run_py", copy / "run.py")
    run = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(run)
    finally:
        for name in ("litert_model", "preprocessing"):
            sys.modules.pop(name, None)
    meta = json.loads((copy / METADATA_FILE).read_text())
    assert run.file_problems(copy, meta) == []
    (copy / "numpy.py").write_text("")
    (copy / "bench.py").write_text("# edited\n")
    (copy / ".venv").mkdir()  # the README's venv, and the user's own files, are not the bundle's business
    (copy / ".venv" / "site.py").write_text("")
    (copy / "photo.png").write_bytes(b"png")
    assert run.file_problems(copy, meta) == [
        "numpy.py is not part of the bundle (code beside run.py is imported before the installed packages)",
        "bench.py changed since the bundle was built (sha256 differs)",
    ]
    (copy / MANIFEST_FILE).write_text(json.dumps({"format": "edgecompress-bundle-manifest/1", "files": {"../x": "0" * 64}}))
    assert "not plain paths inside the bundle" in run.file_problems(copy, meta)[0]
    (copy / MANIFEST_FILE).write_text("{")
    assert run.file_problems(copy, meta) == ["manifest.json is not valid JSON; rebuild the bundle"]


def test_trust_bundle_only_with_check(bundle, tmp_path):
    result = CliRunner().invoke(cli, ["deploy", str(bundle / "model.tflite"), "--target", "linux",
                                      "-o", str(tmp_path / "b"), "--trust-bundle"])  # fmt: skip
    assert result.exit_code == UsageError.exit_code and "--check only" in _one_line(result)


def test_check_runs_scripts_with_bytecode_kept_outside_the_bundle(tmp_path):
    """A planted __pycache__ would run instead of its source; the prefix the check sets makes Python ignore it."""
    module = tmp_path / "mod.py"
    module.write_text("X = 2\n")
    py_compile.compile(str(module), cfile=str(tmp_path / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"))
    stat = module.stat()
    module.write_text("X = 1\n")  # same size and time: the cached bytecode looks current
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    command = [sys.executable, "-c", "import mod; print(mod.X)"]
    planted = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert planted.stdout.strip() == "2"
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "elsewhere")}
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, check=True).stdout.strip() == "1"


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "members, why",
    [
        ([(_info("b/run.py"), b"x"), (_info("b/../../escaped.txt"), b"x")], "not a plain relative path"),
        ([(_info("/tmp/absolute.txt"), b"x")], "not a plain relative path"),
        ([(_info("b/run.py", tarfile.SYMTYPE, "/etc/passwd"), None)], "is a link"),
        ([(_info("b/model.tflite", tarfile.LNKTYPE, "b/other"), None)], "is a link"),
        ([(_info("b/dev", tarfile.CHRTYPE), None)], "device or special file"),
        ([(_info("a/run.py"), b"x"), (_info("b/run.py"), b"x")], "more than one top folder"),
        ([(_info("run.py"), b"x")], "not inside a folder"),
        ([(_info("b/run.py"), b"x"), (_info("b/./run.py"), b"y")], "appears twice"),
        ([], "empty"),
    ],
)
def test_hostile_archives_are_refused_before_extraction(tmp_path, members, why):
    archive = _tar(tmp_path / "b.tar.gz", members)
    result = CliRunner().invoke(cli, ["deploy", "--check", str(archive)])
    assert result.exit_code == UsageError.exit_code
    line = _one_line(result)
    assert why in line and "nothing was extracted" in line
    assert not (tmp_path / "escaped.txt").exists()


def test_archive_size_budget_and_damaged_archive(bundle, tmp_path, monkeypatch):
    archive = bundle.with_name(bundle.name + ".tar.gz")
    monkeypatch.setattr(archive_module, "MAX_BYTES", 1000)
    with pytest.raises(UsageError, match="its members hold more than"):
        extract_archive(archive, tmp_path)
    monkeypatch.undo()
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    result = CliRunner().invoke(cli, ["deploy", "--check", str(damaged)])
    assert result.exit_code == UsageError.exit_code and "not a readable tar archive" in _one_line(result)


def test_archive_of_the_toolkit_is_verified_like_its_folder(bundle, tmp_path):
    archive = bundle.with_name(bundle.name + ".tar.gz")
    folder = extract_archive(archive, tmp_path / "x")
    assert folder == tmp_path / "x" / bundle.name and verify_bundle(folder) == ()
    with tarfile.open(archive) as tar:
        assert {m.uname for m in tar.getmembers()} == {""}
    (folder / "run.py").write_text("print('elsewhere')\n")
    repacked = tmp_path / "repacked.tar.gz"
    with tarfile.open(repacked, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    result = CliRunner().invoke(cli, ["deploy", "--check", str(repacked)])
    assert result.exit_code == ValidationError.exit_code and "run.py (changed)" in _one_line(result)
