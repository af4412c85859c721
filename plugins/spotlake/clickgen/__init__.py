"""The click-stream generator: realistic fake click events into Kafka at a controlled rate.

Modules:

- :mod:`spotlake.clickgen.events`: the event schema (version 1), its JSON form,
  the malformed-record kinds and :func:`~spotlake.clickgen.events.classify`;
- :mod:`spotlake.clickgen.behaviour`: users, sessions and purchase funnels, late,
  out-of-order and malformed records (:class:`~spotlake.clickgen.behaviour.ClickStream`);
- :mod:`spotlake.clickgen.rate`: constant, diurnal and bursty rate profiles and the
  :class:`~spotlake.clickgen.rate.Pacer` that holds a schedule on the wall clock;
- :mod:`spotlake.clickgen.delivery`: the Kafka producer with delivery accounting,
  a JSON-lines sink for ``--dry-run`` and a null sink;
- :mod:`spotlake.clickgen.run`: the loop that paces a stream into a sink and totals it;
- :mod:`spotlake.clickgen.workers`: that loop in several processes, each with a share
  of the users and rate (``--workers``);
- :mod:`spotlake.clickgen.cli`: ``python -m spotlake.clickgen``.

The schema and CLI are documented in ``docs/events.md``.
"""

from __future__ import annotations
