"""The click-stream generator: realistic fake click events into Kafka at a controlled rate.

Modules:

- :mod:`spotlake_dev.clickgen.events`: the event schema (version 1), its JSON form,
  the malformed-record kinds and :func:`~spotlake_dev.clickgen.events.classify`;
- :mod:`spotlake_dev.clickgen.behaviour`: users, sessions and purchase funnels, late,
  out-of-order and malformed records (:class:`~spotlake_dev.clickgen.behaviour.ClickStream`);
- :mod:`spotlake_dev.clickgen.rate`: constant, diurnal and bursty rate profiles and the
  :class:`~spotlake_dev.clickgen.rate.Pacer` that holds a schedule on the wall clock;
- :mod:`spotlake_dev.clickgen.delivery`: the Kafka producer with delivery accounting,
  a JSON-lines sink for ``--dry-run`` and a null sink;
- :mod:`spotlake_dev.clickgen.run`: the loop that paces a stream into a sink and totals it;
- :mod:`spotlake_dev.clickgen.workers`: that loop in several processes, each with a share
  of the users and rate (``--workers``);
- :mod:`spotlake_dev.clickgen.cli`: ``python -m spotlake_dev.clickgen``.

The schema and CLI are documented in ``docs/events.md``.
"""

from __future__ import annotations
