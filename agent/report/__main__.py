"""`python -m agent.report <sweep>`: write the study report (agent/report/document.py)."""

from util.errors import exit_on_user_error


def main(argv: list[str] | None = None) -> int:
    from agent.report.options import parse_options

    parse_options(argv)  # a mistyped command answered before torch and matplotlib load
    from agent.report.document import main as write_report

    return write_report(argv)


raise SystemExit(exit_on_user_error(main))
