"""The Faust application: the worker process, its trainer service and its web views."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from mode import Service

from streams.faults import retry
from streams.job import StreamTrainer
from streams.security import faust_credentials
from streams.settings import Settings

log = logging.getLogger(__name__)


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


class TrainerApp(faust.App):
    """A Faust app that waits for the broker before Faust's own clients start.

    Faust's producer gives up at once when no broker answers; a worker started before
    its broker (a common order in deployments) should wait and say so instead.
    """

    mbnmrn_job: StreamTrainer

    async def on_first_start(self) -> None:
        await super().on_first_start()
        loop = asyncio.get_running_loop()
        await retry(
            "waiting for the Kafka broker (creating topics)",
            lambda: loop.run_in_executor(None, self.mbnmrn_job.ensure_topics),
            stopping=asyncio.Event(),
        )


def build_app(settings: Settings | None = None) -> faust.App:
    """A Faust app running the trainer as a service, with `/recommendations` and `/status`."""
    settings = settings or Settings.from_env()
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    logging.getLogger("model").setLevel(settings.log_level.upper())
    logging.getLogger("streams").setLevel(settings.log_level.upper())
    app = TrainerApp(
        settings.app_id,
        broker=_broker_url(settings.kafka_bootstrap_servers),
        datadir=str(settings.data_dir / "faust"),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 6, 0.5),
        broker_credentials=faust_credentials(settings),
        autodiscover=False,
        topic_allow_declare=False,
    )
    job = StreamTrainer(settings)
    app.mbnmrn_job = job  # for tests and tools that hold the app

    @app.service
    class TrainerService(Service):
        """Runs the trainer loop for the worker's lifetime; stops after the current window."""

        async def on_start(self) -> None:
            await job.start()
            self.add_future(self._run())

        async def _run(self) -> None:
            try:
                await job.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trainer loop failed; stopping the worker")
                app.loop.call_soon(lambda: asyncio.ensure_future(app.stop()))
                raise

        async def on_stop(self) -> None:
            await job.stop()
            if not await job.wait_stopped(60):
                log.warning("trainer did not finish its window within 60 s")
            await job.close()

    @app.page("/recommendations/{user_id}")
    async def recommendations(web: Any, request: Any, user_id: str) -> Any:
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(None, job.recommend, user_id)
        if value is None:
            return web.json({"error": "unknown user", "user_id": user_id}, status=404)
        return web.json(value)

    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        return web.json(job.status())

    return app
