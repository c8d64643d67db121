"""``python -m services.debugger``: settings → bootstrap → run."""

from services.debugger.service import SPEC
from shared.service import main

if __name__ == "__main__":
    main(SPEC)
