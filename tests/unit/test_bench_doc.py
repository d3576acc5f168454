"""`make bench` writes its figures into docs/benchmarks.md, under a title naming the machine and the date."""

from devtools.bench import FIGURES_HEADING, add_to_figures


def test_each_bench_run_adds_its_figures_first_under_the_figures_heading(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nHow it works.\n\n{FIGURES_HEADING}\n\n### an older run\n\nold figures\n")
    add_to_figures(doc, "### `make bench`, mobilenet_v2, AMD EPYC (2 cores), 2026-12-03 21:00 UTC", ["| a | b |"])
    add_to_figures(doc, "### `make bench`, resnet50, AMD EPYC (2 cores), 2026-12-03 22:00 UTC", ["| c | d |"])
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHow it works.")
    figures = text.split(FIGURES_HEADING, 1)[1]
    assert figures.index("resnet50") < figures.index("mobilenet_v2") < figures.index("an older run")
    assert "| c | d |" in figures and "old figures" in figures
