"""docs/runbooks.md: one section per alert, linked from each alert's runbook_url.

Every alert of deploy/prometheus/driftmon-rules.yml carries a runbook_url relative to
docs/ (``runbooks.md#<anchor>``) that must resolve to a heading of docs/runbooks.md. The
anchors are computed as MkDocs computes them (Python-Markdown's ``toc`` extension, its
default ``slugify``, duplicates suffixed ``_1``, ``_2``), and must be the same as GitHub's
(lower case, punctuation dropped, spaces to ``-``, duplicates suffixed ``-1``), so a link
works on the docs site and when the file is read on the forge.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNBOOKS = DOCS / "runbooks.md"
RULES = ROOT / "deploy" / "prometheus" / "driftmon-rules.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "driftmon-rules.test.yml"

PARTS = ("**What it means.**", "**Check first.**", "**Silence it properly.**")


def mkdocs_slug(title: str) -> str:
    """Python-Markdown's ``markdown.extensions.toc.slugify`` (MkDocs' default), separator ``-``."""
    value = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def github_slug(title: str) -> str:
    """GitHub's heading anchors: lower case, punctuation but ``-``/``_`` dropped, each space a ``-``."""
    return re.sub(r" ", "-", re.sub(r"[^\w\- ]", "", title.strip().lower()))


def headings(text: str) -> list[tuple[int, str]]:
    """The ATX headings (level, title) outside fenced code blocks, in order."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(titles: list[str], slug, joiner: str) -> list[str]:
    """Each title's anchor, later duplicates suffixed with ``joiner`` and a count, as the generator does."""
    seen: set[str] = set()
    out = []
    for title in titles:
        anchor, n = slug(title), 0
        while anchor in seen:
            n += 1
            anchor = f"{slug(title)}{joiner}{n}"
        seen.add(anchor)
        out.append(anchor)
    return out


def sections(text: str) -> dict[str, str]:
    """Each level-2 section's title and its body (up to the next level-2 heading)."""
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.M)
    return {title: body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def text() -> str:
    return RUNBOOKS.read_text(encoding="utf-8")


def test_slugs_match_the_generators_on_known_titles():
    # Python-Markdown's and GitHub's documented behaviour on a few titles.
    assert mkdocs_slug("DriftmonDriftCritical") == "driftmondriftcritical"
    assert mkdocs_slug("What check-config checks") == "what-check-config-checks"
    assert mkdocs_slug("Data health: volume, freshness, schema") == "data-health-volume-freshness-schema"
    assert github_slug("Data health: volume, freshness, schema") == "data-health-volume-freshness-schema"
    assert mkdocs_slug("A  -- b") == "a-b" and github_slug("A  -- b") == "a-----b"  # where they differ
    assert anchors(["X", "X"], mkdocs_slug, "_") == ["x", "x_1"]
    assert anchors(["X", "X"], github_slug, "-") == ["x", "x-1"]


def test_the_slugs_agree_with_python_markdown_where_installed(text):
    markdown = pytest.importorskip("markdown")
    md = markdown.Markdown(extensions=["toc"])
    md.convert(text)

    def flatten(tokens):
        for token in tokens:
            yield token["id"]
            yield from flatten(token["children"])

    assert list(flatten(md.toc_tokens)) == anchors([t for _, t in headings(text)], mkdocs_slug, "_")


def test_every_alert_links_an_existing_heading_of_the_runbooks(text):
    titles = [title for _, title in headings(text)]
    mkdocs, github = anchors(titles, mkdocs_slug, "_"), anchors(titles, github_slug, "-")
    assert mkdocs == github, "an anchor that MkDocs and GitHub spell differently"
    for rule in rules():
        url = urlsplit(rule["annotations"]["runbook_url"])
        assert (DOCS / url.path).resolve() == RUNBOOKS, rule["alert"]
        assert url.fragment in mkdocs, f"{rule['alert']}: #{url.fragment} is no heading of docs/runbooks.md"
        # It is the alert's own section, not just any heading.
        assert titles[mkdocs.index(url.fragment)] == rule["alert"], rule["alert"]


def test_no_rule_points_outside_the_docs():
    for rule in rules():
        url = urlsplit(rule["annotations"]["runbook_url"])
        assert not url.scheme and not url.netloc, f"{rule['alert']}: {url.geturl()} leaves the docs"
        path = PurePosixPath(url.path)
        assert not path.is_absolute() and ".." not in path.parts, rule["alert"]
        assert (DOCS / path).resolve().is_relative_to(DOCS.resolve()), rule["alert"]
        assert (DOCS / path).is_file(), rule["alert"]


def test_every_alert_has_one_section_that_names_it_and_every_section_is_an_alerts(text):
    by_title = sections(text)
    alerts = [rule["alert"] for rule in rules()]
    assert sorted(by_title) == sorted(alerts), "one level-2 section per alert, and no other"
    for alert in alerts:
        body = by_title[alert]
        for part in PARTS:
            assert body.count(part) == 1, f"{alert}: {part}"
        assert body.index(PARTS[0]) < body.index(PARTS[1]) < body.index(PARTS[2]), alert
        # "Silence it properly" silences this alert, by its name.
        silence = body[body.index(PARTS[2]):]
        assert f"alertname={alert}" in silence or "Not with a silence" in silence, alert


def test_each_section_states_the_rules_severity_and_for(text):
    by_title = sections(text)
    for rule in rules():
        first = by_title[rule["alert"]].strip().split("\n\n")[0]
        assert f"Severity `{rule['labels']['severity']}`" in first, rule["alert"]
        wait = rule.get("for")
        if wait is None:
            assert "fires at once" in first, rule["alert"]
        else:
            number, unit = int(wait[:-1]), {"m": "minute", "h": "hour"}[wait[-1]]
            assert f"fires after {number} {unit}{'s' if number > 1 else ''}" in first, rule["alert"]


def test_links_within_the_runbooks_resolve(text):
    mkdocs = set(anchors([t for _, t in headings(text)], mkdocs_slug, "_"))
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in mkdocs, target


def test_the_promtool_unit_tests_expect_the_rules_runbook_urls():
    urls = {rule["alert"]: rule["annotations"]["runbook_url"] for rule in rules()}
    for group in yaml.safe_load(RULES_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            for alert in case.get("exp_alerts", []):
                assert alert["exp_annotations"]["runbook_url"] == urls[case["alertname"]]


def _code_spans(text: str) -> list[str]:
    """Inline code spans (they may wrap across lines), whitespace collapsed."""
    return [" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", text)]


def test_the_driftmon_commands_and_options_named_exist(text):
    import click

    from driftmon.cli import main

    commands = [span for span in _code_spans(text) if span.startswith("driftmon ")]
    assert len(commands) > 20
    for span in commands:
        words = span.split()[1:]
        command: click.Command = main
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            assert words[0] in command.commands, span
            command = command.commands[words.pop(0)]
        assert not isinstance(command, click.Group), span
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"{span}: {word}"


def test_the_metrics_named_are_exported():
    names = set(re.findall(r"\bdriftmon_[a-z_]+", RUNBOOKS.read_text(encoding="utf-8")))
    source = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "driftmon").rglob("*.py"))
    for name in names:
        base = re.sub(r"_total$", "", name)
        assert f'"{name}"' in source or f'"{base}"' in source, name
