"""The workflow passes its linters, and the conda environments match the pip pins."""

import re
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import REPO_ROOT, tool_environment


def test_snakemake_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--cores", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=tool_environment(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_check_is_clean():
    snakefmt = Path(sys.executable).parent / "snakefmt"
    result = subprocess.run([str(snakefmt), "--check", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def pins(lines):
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==(\S+)\s*", line.split("#")[0])
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_conda_environments_use_the_requirements_pins():
    requirements = {}
    for name in ("requirements.txt", "requirements-quantize.txt", "requirements-openvino.txt"):
        requirements.update(pins((REPO_ROOT / name).read_text().splitlines()))
    # envs/quantize.yaml: conda's `tensorflow` is requirements.txt's tensorflow-cpu (same version).
    requirements["tensorflow"] = requirements["tensorflow-cpu"]
    environments = sorted((REPO_ROOT / "envs").glob("*.yaml"))
    assert environments
    for path in environments:
        spec = yaml.safe_load(path.read_text())
        pip_lines = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        environment_pins = pins(pip_lines)
        assert environment_pins, path
        for package, version in environment_pins.items():
            assert requirements.get(package) == version, f"{path.name}: {package}=={version} vs requirements.txt"
        assert "python=3.11" in spec["dependencies"], path.name


def test_every_rule_environment_exists():
    for rules in (REPO_ROOT / "rules").glob("*.smk"):
        for reference in re.findall(r'"\.\./(envs/[^"]+)"', rules.read_text()):
            assert (REPO_ROOT / reference).is_file(), f"{rules.name} names missing {reference}"


def test_scripts_answer_help():
    for script in sorted((REPO_ROOT / "scripts").glob("*.py")):
        if 'if __name__ == "__main__":' not in script.read_text():
            continue  # a shared module, not a stage
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout, script.name


def tracked_files():
    listed = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return set(listed.stdout.split())


def readme_paths(readme, top_level):
    """Repository paths the README names: words in its code spans and blocks whose first
    component is a tracked top-level entry (generated ones like results/ are not)."""
    code = re.findall(r"`([^`\n]+)`", readme) + re.findall(r"```\w*\n(.*?)```", readme, re.S)
    paths = set()
    for word in (w for text in code for w in re.split(r"[\s=:(),]+", text)):
        word = word.strip(".'\"")
        if word.split("/")[0] in top_level and not re.search(r"[<{\[]", word):
            paths.add(word.rstrip("/"))
    return paths


DOCUMENTS = (
    "README.md",
    "config/README.md",
    *(f"docs/{path.name}" for path in sorted((REPO_ROOT / "docs").glob("*.md"))),
)


def test_every_path_and_make_target_the_docs_name_is_tracked():
    """The README, config/README.md and docs/*.md name only tracked paths and real make targets,
    and the README stays a five-minute read."""
    import fnmatch

    tracked = tracked_files()
    assert set(DOCUMENTS) <= tracked and len(DOCUMENTS) >= 6
    folders = {str(Path(path).parent) for path in tracked} | {
        "/".join(path.split("/")[:depth]) for path in tracked for depth in range(1, path.count("/") + 1)
    }
    top_level = {path.split("/")[0] for path in tracked}
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO_ROOT / "Makefile").read_text(), re.M))
    named_paths, named_targets = set(), set()
    for document in DOCUMENTS:
        text = (REPO_ROOT / document).read_text()
        paths = readme_paths(text, top_level)
        missing = [p for p in sorted(paths) if p not in tracked | folders and not fnmatch.filter(tracked, p)]
        assert not missing, f"{document} names paths that are not in the tracked tree: {missing}"
        named = set(re.findall(r"\bmake ([a-z][a-z-]*)", text))
        assert named <= targets, f"{document} names make targets the Makefile lacks: {sorted(named - targets)}"
        named_paths |= paths
        named_targets |= named
    assert {"tools/measure/twin_latency.py", "tools/demo/run_demo.py", "profiles/slurm"} <= named_paths
    assert {"test", "demo", "twin"} <= named_targets
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 200


def test_no_rule_or_script_names_a_model():
    """A model's facts live in its registry entry: no rule names a model or a precision, and no
    script names a model (precisions are what scripts act on: fp32, int8, bf16)."""
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    precisions = {"fp32", "int8", "bf16"}
    for path in sorted((REPO_ROOT / "rules").glob("*.smk")):
        text = path.read_text()
        for name in set(config["models"]) | precisions:
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{path.name} names {name}"
    for path in sorted((REPO_ROOT / "scripts").glob("*.py")):
        text = path.read_text()
        for name in set(config["models"]) - precisions:
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{path.name} names {name}"


def test_ruff_lint_and_format_are_clean():
    ruff = Path(sys.executable).parent / "ruff"
    for command in ([str(ruff), "check", "."], [str(ruff), "format", "--check", "."]):
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        assert result.returncode == 0, " ".join(command[1:]) + "\n" + result.stdout + result.stderr


def test_the_config_readme_key_reference_is_the_schemas():
    from tools.config_reference import README, with_reference

    text = README.read_text()
    assert with_reference(text) == text, (
        "config/README.md's key reference is stale: run python -m tools.config_reference"
    )
