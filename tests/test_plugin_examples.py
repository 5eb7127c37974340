"""The two shipped plugin examples, used as a researcher would: listed, checked, run end to end
on synthetic data, and found with their origin and version in the stored run."""

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.plugins import provenance_label
from merx.store import RunStore
from merx.testing import check_fusion, registered

REPO = Path(__file__).resolve().parents[1]
GMU = REPO / "examples" / "merx-gmu"
FILM = REPO / "plugins" / "film.py"


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def tiny(bert_dir, cache) -> list[str]:
    """--set overrides that make any experiment train in seconds: 24 two-second songs, a 2-block
    CNN, a tiny BERT, one epoch."""
    return [f"data.cache_dir={json.dumps(str(cache))}", "data.source.name=synthetic", "data.source.n_songs=24",
            "data.source.duration=2.0", "data.source.min_duration=1.0", "features.n_mels=16",
            "features.n_fft=512", "features.hop_length=256", "features.duration=1.0", "features.workers=1",
            "model.audio.channels=[4, 8]", "model.audio.hidden=16", "model.audio.out_dim=8",
            f"model.text.model={json.dumps(bert_dir)}", "model.text.max_length=32", "model.head.hidden=[8]",
            "train.batch_size=8", "train.epochs=1"]


def run_args(experiment, bert_dir, cache) -> list[str]:
    args = ["run", str(experiment)]
    for item in tiny(bert_dir, cache):
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One data and feature cache for the module: the synthetic songs are generated once."""
    return tmp_path_factory.mktemp("merx-cache")


def squeezed(text: str) -> str:
    # rich wraps long lines, at a space or inside a long path: compare without any whitespace.
    return "".join(text.split())


def shown(run_id: str) -> str:
    """``merx show`` of a run, without whitespace (see ``squeezed``)."""
    return squeezed(invoke("show", run_id).stdout)


def install_from_pyproject(project: Path, site: Path) -> dict:
    """Make ``project`` look installed: its source folder on sys.path plus a dist-info built from
    its pyproject.toml (name, version, entry points), as an editable install would."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    groups = meta["entry-points"]
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in groups.items()))
    return meta


# -- the local single-file plugin: plugins/film.py -------------------------------------------------

def test_film_passes_the_test_kit():
    factory = registered(FILM)["fusions"]["film"]
    check_fusion(factory)
    check_fusion(factory, pooled=False, hidden=8)


def test_film_is_found_in_the_working_directory_and_its_experiment_runs(tmp_path, tiny_bert_dir, cache):
    (tmp_path / "plugins").mkdir()
    shutil.copy(FILM, tmp_path / "plugins" / "film.py")
    (tmp_path / "experiments").mkdir()
    for name in ("quickstart.toml", "fusion_film.toml"):
        shutil.copy(REPO / "experiments" / name, tmp_path / "experiments" / name)

    rows = json.loads(invoke("list-plugins", "--json", "--kind", "fusions").stdout)["fusions"]
    film = next(r for r in rows if r["name"] == "film")
    assert film["origin"] == "local file" and film["hooks"] == ["register_fusions"]
    assert {p["name"] for p in film["params"]} == {"hidden", "pooled", "dropout"}

    invoke(*run_args("experiments/fusion_film.toml", tiny_bert_dir, cache))
    run = RunStore("results.db").get_run(1)
    assert run["status"] == "completed" and run["config"]["model"]["fusion"]["name"] == "film"
    used = next(p for p in run["plugins"] if p["kind"] == "fusions")
    assert (used["name"], used["origin"]) == ("film", "local file")
    assert Path(used["source"]) == tmp_path / "plugins" / "film.py"
    assert provenance_label(used) == f"film (local: {used['source']})"
    assert squeezed(provenance_label(used)) in shown("run1")

    # Switched off, the plugin is gone and the experiment is refused with a clear config error.
    result = CliRunner().invoke(cli, ["--no-local-plugins", "run", "experiments/fusion_film.toml"])
    assert result.exit_code == 2 and "unknown fusion 'film'" in result.stderr


# -- the installable distribution: examples/merx-gmu -----------------------------------------------

def test_gmu_loads_through_its_entry_point_and_its_version_is_stored_with_the_run(
        tmp_path, monkeypatch, tiny_bert_dir, cache):
    meta = install_from_pyproject(GMU, tmp_path / "site")
    monkeypatch.syspath_prepend(str(GMU))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert meta["entry-points"]["merx"] == {"gmu": "merx_gmu"}

    rows = json.loads(invoke("list-plugins", "--json", "--kind", "fusions").stdout)["fusions"]
    gmu = next(r for r in rows if r["name"] == "gmu")
    assert (gmu["origin"], gmu["source"], gmu["version"]) == ("distribution", "merx-gmu", meta["version"])
    assert gmu["hooks"] == ["register_fusions"]
    assert invoke("list-plugins", "--requirements").stdout.splitlines() == [f"merx-gmu=={meta['version']}"]
    table = CliRunner().invoke(cli, ["list-plugins"], terminal_width=200).stdout
    assert f"merx-gmu {meta['version']}" in table and "register_fusions" in table

    (tmp_path / "gmu.toml").write_text('task = "classification"\n[model.fusion]\nname = "gmu"\ndim = 16\n')
    invoke(*run_args(tmp_path / "gmu.toml", tiny_bert_dir, cache))
    run = RunStore("results.db").get_run(1)
    assert run["status"] == "completed"
    assert {"kind": "fusions", "name": "gmu", "origin": "distribution", "source": "merx-gmu",
            "version": meta["version"]} in run["plugins"]
    assert squeezed(f"gmu (merx-gmu {meta['version']})") in shown("run1")


def _can_build_offline() -> bool:
    # Without build isolation pip uses this environment's setuptools, which builds wheels by
    # itself from 70.1 on (older ones need the wheel package).
    from importlib import metadata

    try:
        major, minor = (int(x) for x in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        metadata.version("wheel")
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _can_build_offline(), reason="building offline needs setuptools>=70.1 or wheel")
def test_pip_install_makes_gmu_appear_with_its_distribution_and_version(tmp_path):
    # A throwaway venv that sees this environment's packages (merx included) through a .pth;
    # no network: no dependencies resolved, no isolated build environment.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    here = sysconfig.get_paths()["purelib"]
    Path(purelib, "merx_test_env.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    project = shutil.copytree(GMU, tmp_path / "merx-gmu")  # a build writes build/ and egg-info beside it
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(project)],
                   check=True, capture_output=True)

    def merx(*args):
        return subprocess.run([str(python), "-m", "merx.cli", *args], capture_output=True, text=True, check=True,
                              cwd=tmp_path).stdout

    rows = json.loads(merx("list-plugins", "--json", "--kind", "fusions"))["fusions"]
    gmu = next(r for r in rows if r["name"] == "gmu")
    assert (gmu["origin"], gmu["source"], gmu["version"]) == ("distribution", "merx-gmu", "0.1.0")
    assert merx("list-plugins", "--requirements").split() == ["merx-gmu==0.1.0"]


def test_the_example_distributions_own_tests_pass():
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(GMU)],
                         capture_output=True, text=True, cwd=GMU)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " passed" in out.stdout and "failed" not in out.stdout
