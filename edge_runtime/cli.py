"""``edge-detect``: microphone, directory, file or stdin in; danger events out.

Only wiring lives here: config → Detector → source → Runner → sinks.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from edge_runtime import config as cfg
from edge_runtime import service
from edge_runtime.audio import AudioError
from edge_runtime.events import EventConfig
from edge_runtime.manifest import ManifestError
from edge_runtime.mic import MicError
from edge_runtime.providers import CHOICES
from edge_runtime.scoring import ScoringError
from edge_runtime.sinks import AudioHistory, ClipSink, ConsoleSink, JsonlSink
from edge_runtime.text import OneLineFormatter

log = logging.getLogger("edge-detect")

EXPECTED = (ManifestError, ScoringError, AudioError, cfg.ConfigError, FileNotFoundError,
            ValueError)


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(message)s",
                                              datefmt="%H:%M:%S"))


def install_signals(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` (the loops finish and flush); a second SIGINT aborts."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("%s received: finishing the current stream and flushing events",
                 signal.Signals(signum).name)
        stop.set()

    def hangup(_signum: int, _frame: Any) -> None:
        log.info("SIGHUP received: nothing to reopen (the events file is opened per event, "
                 "so log rotation needs no signal); restart to reload the configuration")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, hangup)


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@click.option("--input", "input", default=("mic",), show_default=True, multiple=True,
              metavar="[NAME=]mic|DIR|FILE|-|URL",
              help="Microphone, a directory to watch, one audio file, raw PCM on stdin, or a "
                   "stream URL (rtsp://, http(s)://, anything ffmpeg reads). Repeat with "
                   "NAME=SPEC for several named sources in one process. With --spark: one DIR or "
                   "URI (hdfs://, s3a://, ...).")
@click.option("--model", default="models_onnx", show_default=True, metavar="DIR",
              help="Model dir (manifest.json + ONNX files, each sha256-verified).")
@click.option("--device", default=None, help="Input device: index or name substring.")
@click.option("--list-devices", is_flag=True, help="List input devices and exit.")
@click.option("--once", is_flag=True, help="DIR: process the existing files, then exit.")
@click.option("--settle", default=1.0, show_default=True, type=float,
              help="DIR: seconds a new file's size/mtime must be stable before it is read "
                   "(a file is read once; see DEPLOY.md).")
@click.option("--max-file-duration", default=43200.0, show_default=True, type=float,
              help="Files: seconds of audio decoded at most per file; the rest is skipped.")
@click.option("--stall-timeout", default=10.0, show_default=True, type=float,
              help="mic/URL: no audio for this many seconds → reopen the device/stream.")
@click.option("--flat-timeout", default=60.0, show_default=True, type=float,
              help="mic/URL: a flat (dead) signal for this many seconds → reopen; 0: never.")
@click.option("--reopen-timeout", default=300.0, show_default=True, type=float,
              help="mic/URL: cannot reopen within this many seconds → exit 3 (for a restart).")
@click.option("--rate", default=48000, show_default=True, type=int,
              help="stdin: sample rate of the raw PCM.")
@click.option("--format", "format", default="s16le", show_default=True,
              type=click.Choice(["s16le", "s32le", "f32le", "u8", "s8"], case_sensitive=False),
              help="stdin: sample format (arecord -f S16_LE → s16le).")
@click.option("--channels", default=1, show_default=True, type=int,
              help="stdin: interleaved channels (mixed to mono).")
@click.option("--threshold", default=None, type=float,
              help="Danger threshold [default: the manifest's, else 0.5].")
@click.option("--hysteresis", default=0.1, show_default=True, type=float,
              help="An event stays open down to threshold - hysteresis.")
@click.option("--min-duration", default=1.0, show_default=True, type=float,
              help="Seconds above threshold before an event counts.")
@click.option("--cooldown", default=2.0, show_default=True, type=float,
              help="Quiet seconds that end an event; danger again sooner continues it.")
@click.option("--update-every", default=10.0, show_default=True, type=float,
              help="Seconds between 'update' messages while an event goes on (0: none).")
@click.option("--window-only", is_flag=True,
              help="Decide on 5 s windows only (as training's fold CV). Default: the model's "
                   "choice — binary models also score each 1 s chunk so short sounds are not "
                   "diluted; class models decide on windows.")
@click.option("--events", default=None, metavar="FILE.jsonl",
              help="Append a JSON line when an event starts and when it ends (fsynced).")
@click.option("--privacy", is_flag=True,
              help="--save-clips: keep no clip in which speech is heard (the AudioSet head "
                   "decides); the event is still reported.")
@click.option("--save-clips", default=None, metavar="DIR",
              help="Write each event's audio (±1 s context) as FLAC.")
@click.option("--clips-max-mb", default=None, type=float,
              help="Keep the clip folder under this many MB (oldest clips removed first).")
@click.option("--clips-keep-days", default=None, type=float,
              help="Remove clips older than this many days.")
@click.option("--clips-keep-best", default=0, show_default=True, type=click.IntRange(0, 10000),
              help="Retention spares the N clips of each class with the highest peak.")
@click.option("--mqtt", default=None, metavar="URL",
              help="Publish events to MQTT with Home Assistant discovery: "
                   "mqtt[s]://[user:pass@]host[:port][/prefix] (extra: edge-detect[mqtt]).")
@click.option("--mqtt-ca", default=None, metavar="FILE", help="mqtts: CA certificate file.")
@click.option("--mqtt-discovery-prefix", default="homeassistant", show_default=True,
              help="Home Assistant discovery topic prefix.")
@click.option("--mqtt-spool", default=None, metavar="DIR",
              help="MQTT messages wait here while the broker is unreachable "
                   "[default: $XDG_STATE_HOME/edge-detect/mqtt-spool].")
@click.option("--notify", multiple=True, metavar="URL",
              help="Push a notification per event: an ntfy topic URL or a webhook (JSON POST); "
                   "repeatable.")
@click.option("--notify-cooldown", default=300.0, show_default=True, type=float,
              help="Seconds between two notifications of the same class.")
@click.option("--monitor", is_flag=True,
              help="Serve what it hears on 127.0.0.1: /metrics (Prometheus), /live (JSON), /.")
@click.option("--monitor-port", default=8765, show_default=True, type=int,
              help="Port of --monitor.")
@click.option("--provider", default="auto", show_default=True,
              type=click.Choice(CHOICES, case_sensitive=False),
              help="onnxruntime execution provider; auto falls back to CPU.")
@click.option("--threads", default=None, type=int,
              help="onnxruntime intra-op threads [default: onnxruntime's choice].")
@click.option("--config", "config", default=None, metavar="FILE",
              help="TOML file with any of these options; the command line overrides it.")
@click.option("--write-systemd-unit", default=None, metavar="PATH",
              help="Write a systemd unit running edge-detect with the other options; exit.")
@click.option("--print-systemd-unit", is_flag=True, help="Print that unit instead; exit.")
@click.option("--spark", default=None, metavar="MASTER",
              help="Run DIR_OR_URI on Apache Spark (local[N], spark://HOST:PORT, yarn, "
                   "k8s://URL): --once scores it once, else streams new files; needs the "
                   "'spark' extra and Java 17.")
@click.option("--spark-checkpoint", default=None, metavar="DIR",
              help="--spark streaming: checkpoint dir [default: beside --events].")
@click.option("--service-user", default="edge-detect", show_default=True, metavar="USER",
              help="The unit's User= (a dedicated, unprivileged account).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings, errors and events.")
@click.pass_context
def command(ctx: click.Context, **options: Any) -> None:
    """Detect dangerous sounds and log events.

    \b
    edge-detect --input mic --device USB --events events.jsonl
    edge-detect --input recordings/ --once --events out.jsonl
    arecord -D hw:1 -f S16_LE -r 48000 | edge-detect --input - --rate 48000
    edge-detect --input porch=rtsp://cam/audio --input kitchen=mic --device USB
    """
    default = click.core.ParameterSource.DEFAULT
    defaults = {k: v for k, v in options.items() if ctx.get_parameter_source(k) == default}
    given = {k: v for k, v in options.items() if k not in defaults}
    known = set(options) | {"sources"}  # [sources.NAME] tables: see edge_runtime.serve
    from_file = cfg.load(options["config"], known) if options["config"] else {}
    opts = cfg.merge(defaults, from_file, given)
    setup_logging(bool(opts["verbose"]), bool(opts["quiet"]))

    if opts["print_systemd_unit"] or opts["write_systemd_unit"]:
        text = service.unit_text(service.service_args(sys.argv[1:]), user=opts["service_user"])
        if opts["write_systemd_unit"]:
            path = service.write_unit(opts["write_systemd_unit"], text)
            click.echo(f"wrote {path}; install: sudo cp {path} /etc/systemd/system/ && "
                       f"sudo systemctl enable --now {path.name}")
        else:
            click.echo(text, nl=False)
        return
    if opts["list_devices"]:
        from edge_runtime.mic import describe_devices

        click.echo(describe_devices())
        return
    sys.exit(run(opts))


def run(opts: dict[str, Any]) -> int:
    """Build the detector, sinks and sources from resolved options; returns the exit code."""
    from edge_runtime.daemon import Runner
    from edge_runtime.detector import Detector
    from edge_runtime.serve import Serialised, parse_sources, serve_all

    stop = threading.Event()
    install_signals(stop)
    if opts.get("spark"):
        from edge_runtime.spark_job import run_spark

        return run_spark(opts, stop)
    specs = parse_sources(opts["input"], opts["device"], opts.get("sources"))
    detector = Detector(opts["model"], provider=opts["provider"], threads=opts["threads"],
                        threshold=opts["threshold"],
                        chunk_decisions=False if opts["window_only"] else None)
    events = EventConfig(threshold=detector.threshold, hysteresis=float(opts["hysteresis"]),
                         min_duration_s=float(opts["min_duration"]),
                         cooldown_s=float(opts["cooldown"]),
                         update_every_s=float(opts["update_every"]))
    log.info("provider %s; hop %.2f s, window %.2f s; threshold %.2f (off %.2f); model %s",
             detector.provider, detector.hop_s, detector.window_s, events.threshold, events.off,
             detector.model_id[:12])
    shared: list[Any] = [ConsoleSink()]
    if opts["events"]:
        shared.append(JsonlSink(opts["events"]))
    if opts["notify"]:
        from edge_runtime.notify import Notifier

        urls = opts["notify"]
        urls = [urls] if isinstance(urls, str) else list(urls)  # TOML: a string or a list
        shared.append(Notifier(urls, cooldown_s=float(opts["notify_cooldown"])))
    if opts["monitor"]:
        from edge_runtime.monitor import Monitor

        shared.append(Monitor(port=int(opts["monitor_port"])))
    mqtt = None
    if opts["mqtt"]:
        from edge_runtime.lifecycle import model_classes
        from edge_runtime.mqtt import MqttSink

        name = specs[0].name or specs[0].input if len(specs) == 1 else "+".join(
            str(spec.name) for spec in specs)
        mqtt = MqttSink(opts["mqtt"], input_name=name,
                        classes=model_classes(detector), ca_file=opts["mqtt_ca"],
                        discovery_prefix=opts["mqtt_discovery_prefix"],
                        spool_dir=opts["mqtt_spool"],
                        off_delay_s=max(60.0, 3 * events.update_every_s))
        shared.append(mqtt)
    if opts["save_clips"] and (opts["clips_max_mb"] is not None or opts["clips_keep_days"]):
        from edge_runtime.retention import RetentionSink

        shared.append(RetentionSink(opts["save_clips"], opts["clips_max_mb"],
                                    opts["clips_keep_days"], int(opts["clips_keep_best"])))
    lock = threading.Lock()  # several source threads share these sinks
    wrapped = [Serialised(sink, lock) for sink in shared] if len(specs) > 1 else shared
    runners: list[Runner] = []

    speech = None
    if opts["privacy"] and opts["save_clips"]:
        from edge_runtime.privacy import speech_guard

        speech = speech_guard(detector)

    def make_runner(_spec: Any) -> Runner:
        sinks, history = list(wrapped), None
        if opts["save_clips"]:
            history = AudioHistory(detector.sample_rate)
            sinks.append(ClipSink(opts["save_clips"], history, speech=speech))
        runners.append(Runner(detector, events, sinks, history=history, stop=stop))
        return runners[-1]

    if mqtt is not None:
        mqtt.on_command = lambda paused: [r.set_paused(paused) for r in runners]
    try:
        code, _ = serve_all(specs, make_runner, opts, stop)
    finally:  # every sink closed once (they flush what they hold)
        Runner._each([*shared, *(s for r in runners for s in r.sinks if s not in wrapped)],
                     "close")
    for spec, runner in zip(specs, runners, strict=False):
        st = runner.stats
        log.info("done%s: %d stream(s), %d failed, %d event(s); %.1f s of audio in %.1f s",
                 f" ({spec.name})" if spec.name else "", st.streams, st.failed, st.events,
                 st.audio_s, st.compute_s)
    return code


def main(argv: list[str] | None = None) -> None:
    """Console entry point: expected failures become one line on stderr, exit status 2."""
    try:
        command.main(args=argv, prog_name="edge-detect", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except (*EXPECTED, MicError) as exc:
        click.echo(f"edge-detect: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
