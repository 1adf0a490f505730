"""The one exception type for mistakes a user can fix.

It is raised wherever bad input is found and caught once at each command-line edge, which
prints its single line and exits with code 2. Anything else is a bug and keeps its traceback.
"""

import sys

USAGE_EXIT_CODE = 2


class UserError(Exception):
    """Bad input: the message is one line naming the key, the value and what is allowed."""


def exit_on_user_error(main):
    """Run `main()`; turn a UserError into one line on stderr and exit code 2."""
    try:
        return main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
