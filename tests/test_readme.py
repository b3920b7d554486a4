"""The README's figures come from benchmarks/results, never from a keyboard."""

import subprocess
import sys


def test_readme_results_section_is_rendered_from_the_benchmark_files(root):
    proc = subprocess.run([sys.executable, "benchmarks/readme_tables.py", "--check"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_readme_gives_the_two_commands(root):
    text = (root / "README.md").read_text()
    assert "make demo" in text and "make test" in text
