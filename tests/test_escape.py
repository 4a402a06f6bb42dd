"""Encoders for untrusted text: nothing a server or a prompt file sends can break their output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from llamabatch.escape import markdown_cell, terminal, xml_text
from llamabatch.report.tables import markdown_table

HOSTILE = "a|b`c\nd\r\x00e\x1b[2J\x1b]0;owned\x07f\x0b\x0c\x7f\x9b\u202eg\\h<i>"


def test_terminal_text_holds_no_control_characters() -> None:
    shown = terminal(HOSTILE + "\tend\n")
    assert not any(ord(c) < 32 and c not in "\t\n" for c in shown)
    assert "\x7f" not in shown and "\x9b" not in shown and "\u202e" not in shown
    assert "\\x1b[2J" in shown and "\\x00" in shown  # visible, not silently dropped
    assert shown.endswith("\tend\n")


def test_a_markdown_cell_cannot_add_columns_or_lines() -> None:
    table = markdown_table(["id", "value"], [[HOSTILE, 1], ["plain", 2]])
    lines = table.split("\n")
    assert len(lines) == 4  # header, rule, two rows
    for line in lines:
        unescaped = line.replace("\\\\", "").replace("\\|", "")
        assert unescaped.count("|") == 3, line
    assert "`" not in table.replace("\\`", "")
    assert "\x00" not in table and "\x1b" not in table and "\\<i>" in table
    assert markdown_cell("x_1 [a]") == "x_1 [a]"  # ordinary text stays readable


def test_xml_text_parses_with_elementtree() -> None:
    root = ET.Element("t", name=xml_text(HOSTILE + "\ud800\uffff"))
    root.text = xml_text(HOSTILE)
    parsed = ET.fromstring(ET.tostring(root, encoding="unicode"))
    assert parsed.get("name", "").startswith("a|b`c") and "\\x1b" in (parsed.text or "")
