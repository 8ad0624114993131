"""The wiring: Faust app, topics, agents, Redis writer, embedded broker, configuration and CLI."""
