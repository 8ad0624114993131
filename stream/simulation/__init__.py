"""Closed-loop traffic simulator: users with hidden tastes react to the pages they are served.

Pure parts (no Kafka, no clocks): ``world`` (catalog with genres and styled artworks),
``users`` (hidden tastes), ``response`` (how a user reacts to a page), ``oracle`` (the best
achievable page), ``population`` (the simulated clock and session life cycle). Wiring:
``inprocess`` (against an in-process engine), ``kafka_loop`` (against a live worker),
``report`` (summary and tables), ``runner`` (``insession simulate``), ``live_view`` (the demo's
terminal view).

Hand-written rather than built on RecSim/RecSim NG: those bring TensorFlow and their own
episode loop, while this simulator has to react event by event to pages arriving over Kafka,
emit this project's event types with realistic event times, and add no dependencies.
"""
