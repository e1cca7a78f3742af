"""The install plan: what is missing, what stays, and every refusal taken before pip could run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from runtime.contract.errors import ManifestError, PlanConflictError, WheelhouseError
from runtime.contract.manifest import SkippedRequirement
from runtime.installer.discovery import Wheelhouse, open_wheelhouse
from runtime.installer.interpreter import Interpreter, installed_versions
from runtime.installer.plan import InstallPlan, make_plan
from tests.support.packages import make_wheel
from tests.support.wheelhouses import kernel_profile, write_wheelhouse


def _env(**versions: str) -> Interpreter:
    return Interpreter(versions={name.replace("_", "-"): v for name, v in versions.items()})


def _house(folder: Path, wheels: list[Path], **claims: object) -> Wheelhouse:
    claims.setdefault("target", kernel_profile())
    write_wheelhouse(folder, wheels, **claims)  # type: ignore[arg-type]
    return open_wheelhouse(folder)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("plan-wheels")
    return {
        "alpha": make_wheel(folder, "alpha", "1.0", requires=["beta>=1"]),
        "beta1": make_wheel(folder, "beta", "1.0"),
        "beta2": make_wheel(folder, "beta", "2.0"),
        "gamma": make_wheel(folder, "gamma", "1.0"),
        "torch": make_wheel(folder, "torch", "2.10.0"),
        "codecs312": make_wheel(
            folder, "fancycodecs", "2026.10.10", tag="cp312-abi3-manylinux_2_28_x86_64"
        ),
        "newpython": make_wheel(folder, "newpy", "1.0", requires_python=">=3.99"),
    }


def test_only_missing_packages_are_planned(tmp_path: Path, made: dict[str, Path]) -> None:
    house = _house(tmp_path / "h", [made["alpha"], made["beta2"], made["gamma"]])

    plan = make_plan([house], _env(gamma="1.0", beta="2.0"))

    assert [(w.name, w.version, w.verified) for w in plan.install] == [("alpha", "1.0", True)]
    assert plan.install[0].source == tmp_path / "h" / "wheels" / made["alpha"].name
    assert {s.name: s.reason for s in plan.skipped} == {
        "beta": "already installed",
        "gamma": "already installed",
    }


def test_preinstalled_versions_that_satisfy_are_kept(tmp_path: Path, made: dict[str, Path]) -> None:
    house = _house(
        tmp_path / "h",
        [made["beta2"], made["torch"]],
        specifiers={"beta": "", "torch": "==2.10.0"},
    )

    plan = make_plan([house], _env(beta="1.5", torch="2.10.0+cu128"))

    assert plan.empty
    reasons = {s.name: s.reason for s in plan.skipped}
    assert reasons["beta"] == "this kernel has 1.5"
    assert reasons["torch"] == "this kernel has 2.10.0+cu128, which satisfies ==2.10.0"


def test_a_preinstalled_package_is_never_replaced_unasked(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    house = _house(tmp_path / "h", [made["beta2"]], specifiers={"beta": ">=2"})

    with pytest.raises(PlanConflictError) as caught:
        make_plan([house], _env(beta="1.0"))

    message = str(caught.value)
    assert "beta 1.0 is installed" in message and "needs beta>=2" in message
    assert str(tmp_path / "h") in message and "\n" not in message


def test_a_requested_upgrade_replaces_the_preinstalled_version(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    house = _house(
        tmp_path / "h", [made["beta2"]], specifiers={"beta": ">=2"}, upgrade_of={"beta": "1.0"}
    )

    (planned,) = make_plan([house], _env(beta="1.0")).install

    assert (planned.name, planned.version, planned.replaces) == ("beta", "2.0", "1.0")
    assert make_plan([house], _env(beta="2.0")).empty  # once upgraded, nothing more to do


def test_wheelhouses_merge_into_one_plan(tmp_path: Path, made: dict[str, Path]) -> None:
    first = _house(tmp_path / "a", [made["alpha"], made["beta1"]], specifiers={"beta": ">=1"})
    second = _house(tmp_path / "b", [made["beta2"], made["gamma"]])

    plan = make_plan([first, second], _env())

    assert [(w.name, w.version, w.wheelhouse) for w in plan.install] == [
        ("alpha", "1.0", tmp_path / "a"),
        ("beta", "2.0", tmp_path / "b"),  # the newest version meeting both wheelhouses
        ("gamma", "1.0", tmp_path / "b"),
    ]


def test_conflicting_versions_are_refused(tmp_path: Path, made: dict[str, Path]) -> None:
    first = _house(tmp_path / "a", [made["beta1"]], specifiers={"beta": "==1.0"})
    second = _house(tmp_path / "b", [made["beta2"]], specifiers={"beta": ">=2"})

    with pytest.raises(PlanConflictError) as caught:
        make_plan([first, second], _env())

    message = str(caught.value)
    assert message.startswith("beta: the wheelhouses disagree")
    assert f"{tmp_path / 'a'} has 1.0" in message and f"{tmp_path / 'b'} has 2.0" in message


def test_a_wheelhouse_for_another_python_says_which_and_how_to_rebuild(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    house = _house(tmp_path / "h", [made["gamma"]], target=kernel_profile(python_version="3.12"))

    with pytest.raises(WheelhouseError) as caught:
        make_plan([house], _env())

    message = str(caught.value)
    assert "built for Python 3.12 (target profile 'kaggle-py312')" in message
    assert "this kernel runs Python 3.11" in message
    assert "python -m bundler build --target kaggle-py311" in message


def test_a_foreign_wheelhouse_beside_a_fitting_one_is_ignored(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    foreign = _house(
        tmp_path / "py312", [made["beta2"]], target=kernel_profile(python_version="3.12")
    )
    fitting = _house(tmp_path / "py311", [made["beta1"]])

    plan = make_plan([foreign, fitting], _env())

    assert [(w.name, w.version) for w in plan.install] == [("beta", "1.0")]
    assert plan.ignored == (f"{tmp_path / 'py312'}: built for Python 3.12, not 3.11",)


def test_a_wheel_for_another_python_is_refused_or_skipped_if_optional(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    required = _house(tmp_path / "r", [made["codecs312"]])
    with pytest.raises(WheelhouseError) as caught:
        make_plan([required], _env())
    assert "fancycodecs-2026.10.10-cp312-abi3-manylinux_2_28_x86_64.whl is built for cp312" in str(
        caught.value
    )
    assert "--target kaggle-py311" in str(caught.value)

    optional = _house(tmp_path / "o", [made["codecs312"], made["gamma"]], optional=["fancycodecs"])
    plan = make_plan([optional], _env())
    assert [w.name for w in plan.install] == ["gamma"]
    assert any("optional fancycodecs 2026.10.10 skipped" in w for w in plan.warnings)


def test_requires_python_is_checked(tmp_path: Path, made: dict[str, Path]) -> None:
    house = _house(tmp_path / "h", [made["newpython"]])
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    manifest["wheels"][0]["requires_python"] = ">=3.99"
    (tmp_path / "h" / "manifest.json").write_text(json.dumps(manifest))
    house = open_wheelhouse(tmp_path / "h")

    with pytest.raises(WheelhouseError, match=r"is for Python >=3\.99, not this Python 3\.11"):
        make_plan([house], _env())


def test_a_wheel_missing_from_disk_is_named(tmp_path: Path, made: dict[str, Path]) -> None:
    house = _house(tmp_path / "h", [made["alpha"], made["beta1"]])
    (tmp_path / "h" / "wheels" / made["beta1"].name).unlink()

    with pytest.raises(WheelhouseError) as caught:
        make_plan([house], _env())
    assert str(caught.value) == (
        f"{tmp_path / 'h'}: {made['beta1'].name} is listed in manifest.json but missing from "
        "disk (looked in wheels/ and beside the manifest); upload the whole wheelhouse folder again"
        " with `kaggle datasets create -p DIR --dir-mode zip` (without it Kaggle drops wheels/)"
    )
    # Not needed, not a problem: the kernel already has beta.
    assert [w.name for w in make_plan([house], _env(beta="1.0")).install] == ["alpha"]


def test_a_dependency_nobody_provides_is_refused(tmp_path: Path, made: dict[str, Path]) -> None:
    house = _house(tmp_path / "h", [made["alpha"]], requires_dist={"alpha": ["beta>=1"]})

    with pytest.raises(WheelhouseError, match=r"alpha 1\.0 from .* needs beta>=1, but nothing is"):
        make_plan([house], _env())
    with pytest.raises(WheelhouseError, match=r"needs beta>=1, but only 0\.5 is installed"):
        make_plan([house], _env(beta="0.5"))
    assert [w.name for w in make_plan([house], _env(beta="1.2")).install] == ["alpha"]


def test_what_the_bundler_assumed_preinstalled_must_be_there(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    write_wheelhouse(tmp_path / "h", [made["alpha"]], target=kernel_profile({"beta": "1.0"}))
    path = tmp_path / "h" / "manifest.json"
    data = json.loads(path.read_text())
    data["skipped_preinstalled"] = [
        SkippedRequirement("beta", "1.0", ">=1", ("alpha",)).to_dict(),
        SkippedRequirement("torch", "2.10.0", "", ("<user>",)).to_dict(),
    ]
    path.write_text(json.dumps(data))
    house = open_wheelhouse(tmp_path / "h")

    with pytest.raises(PlanConflictError, match=r"expects this kernel to have beta >=1 .* alpha"):
        make_plan([house], _env())
    plan = make_plan([house], _env(beta="1.0"))
    assert [w.name for w in plan.install] == ["alpha"]
    assert any("torch 2.10.0 preinstalled, but it does not have it" in w for w in plan.warnings)


def test_plain_wheel_folders_are_used_unverified_when_allowed(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    plain_dir = tmp_path / "plain"
    for key in ("beta1", "beta2", "gamma", "codecs312"):
        plain_dir.mkdir(exist_ok=True)
        (plain_dir / made[key].name).write_bytes(made[key].read_bytes())
    (plain_dir / "not-a-wheel.whl").write_bytes(b"")
    plain = open_wheelhouse(plain_dir)
    verified = _house(tmp_path / "v", [made["gamma"]])

    plan = make_plan([verified, plain], _env(), allow_unverified=True)

    assert [(w.name, w.version, w.verified, w.wheelhouse) for w in plan.install] == [
        ("beta", "2.0", False, plain_dir),  # newest of the plain folder
        ("gamma", "1.0", True, tmp_path / "v"),  # the manifest's pinned wheel wins
    ]
    assert any("fancycodecs: no wheel" in w for w in plan.warnings)
    assert any("not valid wheel names: not-a-wheel.whl" in w for w in plan.warnings)
    kept = make_plan([plain], _env(beta="0.1", gamma="1"), allow_unverified=True)
    assert [w.name for w in kept.install] == []


def test_an_invalid_specifier_names_the_manifest(tmp_path: Path, made: dict[str, Path]) -> None:
    write_wheelhouse(
        tmp_path / "h", [made["gamma"]], target=kernel_profile(), specifiers={"gamma": ">=>1"}
    )

    # Refused when the manifest is read, before any plan is made from it.
    with pytest.raises(ManifestError, match=r"h/manifest.json: invalid version specifier '>=>1'"):
        open_wheelhouse(tmp_path / "h")


def test_installed_versions_read_folder_names_and_fall_back_to_metadata(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "Pillow-11.3.0.dist-info").mkdir(parents=True)
    (site / "torch-2.10.0+cu128.dist-info").mkdir()
    (site / "ruamel.yaml-0.18.6.dist-info").mkdir()
    legacy = site / "oldpkg-1.2-py3.11.egg-info"
    legacy.mkdir()
    (legacy / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Old_Pkg\nVersion: 1.2\n")
    (site / "broken.egg-info").mkdir()  # no metadata at all: not a distribution
    shadowed = tmp_path / "later"
    (shadowed / "pillow-9.0.dist-info").mkdir(parents=True)

    assert installed_versions([str(site), str(shadowed), str(tmp_path / "missing")]) == {
        "pillow": "11.3.0",
        "torch": "2.10.0+cu128",
        "ruamel-yaml": "0.18.6",
        "old-pkg": "1.2",
    }


def test_dropping_an_optional_wheel_re_checks_the_wheels_that_need_it(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    # omega (optional) needs something nobody provides, so it is dropped; alpha, checked first
    # (alphabetically), needs omega and must not stay planned without it.
    omega = make_wheel(tmp_path / "dist", "omega", "1.0", requires=["nowhere>=1"])
    needs = {"alpha": ["omega"], "omega": ["nowhere>=1"]}
    house = _house(tmp_path / "h", [made["alpha"], omega], optional=["omega"], requires_dist=needs)

    with pytest.raises(WheelhouseError) as caught:
        make_plan([house], _env())
    assert str(caught.value).startswith(
        f"alpha 1.0 from {tmp_path / 'h'} needs omega, but optional omega was left out "
        "(omega 1.0 from"
    )

    both = _house(
        tmp_path / "o", [made["alpha"], omega], optional=["omega", "alpha"], requires_dist=needs
    )
    plan = make_plan([both], _env())
    assert plan.empty
    assert {s.name for s in plan.skipped} == {"alpha", "omega"}
    assert any(w.startswith("optional alpha skipped: alpha 1.0") for w in plan.warnings)


def test_the_own_wheel_is_the_named_wheelhouses_and_never_a_downgrade(
    tmp_path: Path, made: dict[str, Path]
) -> None:
    older = make_wheel(tmp_path / "dist", "kaggle-offline", "0.1.0")
    newer = make_wheel(tmp_path / "dist", "kaggle-offline", "0.2.0")
    pins = {"kaggle-offline": "==0.1.0"}
    first = _house(tmp_path / "a", [made["gamma"]], self_wheel=older, specifiers=pins)
    second = _house(tmp_path / "b", [], self_wheel=newer, specifiers={"kaggle-offline": "==0.2.0"})
    found = [dataclasses.replace(first, named=False), dataclasses.replace(second, named=False)]

    def own(plan: InstallPlan) -> tuple[str, str | None]:
        (wheel,) = [w for w in plan.install if w.name == "kaggle-offline"]
        return wheel.version, wheel.replaces

    # Found by a search: the newest own wheel; the two pins are not "wheelhouses that disagree".
    assert own(make_plan(found, _env())) == ("0.2.0", None)
    # bootstrap.py names its own folder: the installer that runs is the one installed.
    assert own(make_plan([first, found[1]], _env())) == ("0.1.0", None)
    # An older one installed is replaced; the same or a newer one is kept.
    assert own(make_plan([first, found[1]], _env(kaggle_offline="0.0.9"))) == ("0.1.0", "0.0.9")
    kept = make_plan([first], _env(kaggle_offline="0.3.0", gamma="1.0"))
    assert kept.empty
    assert [s.reason for s in kept.skipped if s.name == "kaggle-offline"] == [
        "the newer 0.3.0 installed is kept"
    ]
