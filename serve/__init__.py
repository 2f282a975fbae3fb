"""Ray Serve wiring of the pipeline stages (ray, fastapi). Holds no stage logic of its own."""

__all__: list[str] = []
