"""`ssd serve`: the detector as an HTTP service (FastAPI on uvicorn, or Ray Serve replicas) with a web page."""

from __future__ import annotations

import argparse
import os
import signal
import socket

from ssd.cli.arguments import (
    add_device_argument,
    add_model_file_arguments,
    add_threads_argument,
    class_names_from,
    positive_int,
)

# On SIGTERM, the longest the requests in flight get to finish (a slow client's upload included) before the
# server stops anyway: well inside Kubernetes' default 30 s grace.
GRACEFUL_SHUTDOWN_S = 20

HELP = "serve detections over HTTP: POST /v1/detect, /health, /metrics, and a web page at /"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_file_arguments(
        parser,
        "a checkpoint of ours, a torchvision SSD file (with --arch), or an exported .onnx / .xml / .torchscript",
        class_names=True,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument(
        "--max-batch", type=int, default=8, help="most pictures gathered into one inference (default: 8)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="longest a picture waits for others to join its batch (default: 5)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes, each with its own model (default: 1)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest request body accepted (default: 20)"
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="pictures larger than this are refused as decompression bombs (default: 89478485, PIL's)",
    )
    parser.add_argument("--ray", action="store_true", help="serve as a Ray Serve deployment (extra [ray])")
    parser.add_argument(
        "--replicas", type=int, default=1, help="with --ray: replicas of the model (default: 1)"
    )
    add_device_argument(parser)
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ssd.errors import UserError

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.replicas < 1:
        raise UserError(f"--replicas must be at least 1, got {args.replicas}")
    if args.replicas > 1 and not args.ray:
        raise UserError("--replicas is for Ray Serve (--ray); one machine's processes are --workers")
    if args.ray and args.workers > 1:
        raise UserError("--workers is for uvicorn's processes; with --ray, say --replicas")
    from ssd.errors import require_extra

    for module in ("fastapi", "multipart", "prometheus_client"):
        require_extra(module, "serve", "ssd serve")
    uvicorn = require_extra("uvicorn", "serve", "ssd serve")

    from ssd.serve.settings import ServeSettings

    _check_port_is_free(args.host, args.port)
    threads = args.threads
    if threads is None and args.workers > 1:  # the workers share the CPUs rather than each taking them all
        threads = max(1, (os.cpu_count() or 1) // args.workers)
    class_names = class_names_from(args.class_names)
    settings = ServeSettings(
        weights=args.weights,
        arch=args.arch,
        num_classes=args.num_classes,
        class_names=tuple(class_names) if class_names else None,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        threads=threads,
        device=args.device,
    )
    if args.ray:
        from ssd.serve.ray_app import serve_with_ray

        return serve_with_ray(settings, args.host, args.port, args.replicas)

    from ssd.serve.app import ServerState, create_app

    # Loaded here first, so that a bad file is one line and exit 2 before anything listens.
    state = ServerState(settings)
    state.load()
    if not state.ready:
        return 2
    print(f"serving {state.description['name']} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    if args.workers == 1:
        return _until_stopped(
            uvicorn.run,
            create_app(settings, state.detector),
            host=args.host,
            port=args.port,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    from ssd.serve.settings import SETTINGS_VARIABLE

    os.environ[SETTINGS_VARIABLE] = settings.to_json()  # each worker process builds its own app from it
    return _until_stopped(
        uvicorn.run,
        "ssd.serve.app:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


class _Stopped(Exception):
    pass


def _until_stopped(serve, *args, **kwargs) -> int:
    """Serve until SIGTERM, then exit 0. uvicorn finishes the requests in flight on SIGTERM and then raises
    the signal again for whoever handled it before: this handler, which ends the command cleanly."""

    def stop(signum, frame):
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        serve(*args, **kwargs)
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("stopped")
    return 0


def _check_port_is_free(host: str, port: int) -> None:
    from ssd.errors import UserError

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise UserError(
            f"--host {host} --port {port}: cannot listen there ({error.strerror or error})"
        ) from None
