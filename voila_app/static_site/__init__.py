"""The static site's parts: :mod:`.capture` (runs in each notebook's kernel), :mod:`.page` (HTML) and ``assets/``."""
