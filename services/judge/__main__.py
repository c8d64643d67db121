"""``python -m services.judge``: settings → bootstrap → run."""

from services.judge.service import SPEC
from shared.service import main

if __name__ == "__main__":
    main(SPEC)
