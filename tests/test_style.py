"""The workflow passes its linters, and the conda environments match the pip pins."""

import re
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO_ROOT, tool_environment


def test_snakemake_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--cores", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=tool_environment(),
    )  # fmt: skip
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
    for name in ("requirements.txt", "requirements-quantize.txt"):
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
