"""``edge-detect``: microphone, directory, file or stdin in; danger events out.

Only wiring lives here: config → Detector → source → Runner → sinks.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from edge_runtime import config as cfg
from edge_runtime import service
from edge_runtime.audio import AudioError
from edge_runtime.events import EventConfig
from edge_runtime.manifest import ManifestError
from edge_runtime.mic import MicError
from edge_runtime.options import OPTIONS, Option, OptionError, check_together
from edge_runtime.scoring import ScoringError
from edge_runtime.sinks import AudioHistory, ClipSink, ConsoleSink, JsonlSink
from edge_runtime.text import OneLineFormatter, one_line, printable

log = logging.getLogger("edge-detect")

EXPECTED = (ManifestError, ScoringError, AudioError, cfg.ConfigError, OptionError,
            FileNotFoundError, ValueError)


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(message)s",
                                              datefmt="%H:%M:%S"))


RECEIVED: list[int] = []  # the signals that stopped this run


def install_signals(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` (the loops finish and flush); a second SIGINT aborts."""
    RECEIVED.clear()  # a run's own signals only

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        RECEIVED.append(signum)
        log.info("%s received: stopping; open events are closed and written (a watched "
                 "folder's file cut short is read again at the next start)",
                 signal.Signals(signum).name)
        stop.set()

    def hangup(_signum: int, _frame: Any) -> None:
        log.info("SIGHUP received: nothing to reopen (the events file is opened per event, "
                 "so log rotation needs no signal); restart to reload the configuration")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, hangup)


def _option(option: Option):
    """The click option of one declared :class:`~edge_runtime.options.Option`."""
    names = [option.flag, *([option.short] if option.short else [])]
    if option.is_flag:
        return click.option(*names, option.name, is_flag=True, default=option.default,
                            help=option.help)
    if option.multiple:
        return click.option(*names, option.name, type=Checked(option), multiple=True,
                            default=option.default,
                            show_default=option.default_text or bool(option.default),
                            metavar=option.metavar or _metavar(option), help=option.help)
    return click.option(*names, option.name, type=Checked(option), default=option.default,
                        show_default=option.default_text or option.default is not None,
                        metavar=option.metavar or _metavar(option), help=option.help)


def _metavar(option: Option) -> str:
    if option.choices:
        return "[" + "|".join(option.choices) + "]"
    return {int: "INTEGER", float: "FLOAT"}.get(option.kind, "TEXT")


class Checked(click.ParamType):
    """Converts and checks a command-line value with its option's declaration."""

    def __init__(self, option: Option) -> None:
        self.option = option
        self.name = option.kind.__name__

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        try:
            return self.option.parse(value, text=isinstance(value, str))
        except OptionError as exc:
            self.fail(str(exc), param, ctx)


def declared_options(func):
    """Apply every declared option (first declared = first in --help)."""
    for option in reversed(OPTIONS):
        func = _option(option)(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@declared_options
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
    from_file = cfg.load(options["config"]) if options["config"] else {}
    opts = cfg.merge(defaults, from_file, given)
    check_together(opts)
    setup_logging(bool(opts["verbose"]), bool(opts["quiet"]))
    if options["config"] and cfg.readable_secret(options["config"]):
        log.warning("%s holds a password or token and every user of this machine can read it: "
                    "chmod 640 it (owner root, group of the service user)",
                    printable(options["config"]))

    if opts["print_systemd_unit"] or opts["write_systemd_unit"]:
        from edge_runtime.serve import parse_sources

        args = service.service_args(sys.argv[1:])
        refusals, warnings = service.unit_problems(
            opts, parse_sources(opts["input"], opts["device"], opts.get("sources")),
            Path.cwd(), opts["service_user"])
        if refusals:
            raise OptionError("; ".join(refusals))
        for warning in warnings:
            log.warning("%s", warning)
        text = service.unit_text(args, user=opts["service_user"], opts=opts)
        if secrets := service.secret_flags(args):
            log.warning("%s holds a password or token: `ps` and `systemctl show` show it to "
                        "every user of this machine; put it in a config file only the service "
                        "can read (--config /etc/edge-detect.toml, chmod 640) instead",
                        " and ".join(secrets))
        if opts["write_systemd_unit"]:
            path = service.write_unit(opts["write_systemd_unit"], text)
            mode = "600" if secrets else "644"  # cp would keep an installed unit's own mode
            click.echo(f"wrote {path}; install: sudo install -m {mode} {path} "
                       f"/etc/systemd/system/ && sudo systemctl enable --now {path.name}")
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
    try:
        specs = parse_sources(opts["input"], opts["device"], opts.get("sources"))
    except ValueError as exc:  # a [sources.NAME] table: say which file holds it
        if opts.get("config") and str(exc).startswith("[sources."):
            raise cfg.ConfigError(f"{opts['config']}: {exc}") from None
        raise
    detector = Detector(opts["model"], provider=opts["provider"], threads=opts["threads"],
                        threshold=opts["threshold"],
                        chunk_decisions=False if opts["window_only"] else None,
                        expect_model=opts["expect_model"])
    events = EventConfig(threshold=detector.threshold, hysteresis=float(opts["hysteresis"]),
                         min_duration_s=float(opts["min_duration"]),
                         cooldown_s=float(opts["cooldown"]),
                         update_every_s=float(opts["update_every"]))
    if events.off <= 0.0:
        log.warning("threshold %.2f - hysteresis %.2f leaves no off-threshold: an event ends "
                    "only with its stream", events.threshold, events.hysteresis)
    scaled = (" on class scores scaled so that each class's own threshold is 0.50"
              if detector.scorer.classes is not None else "")
    log.info("provider %s; hop %.2f s, window %.2f s, a decision every %.2f s; threshold %.2f "
             "(off %.2f)%s; model %s", detector.provider, detector.hop_s, detector.window_s,
             detector.stride_s, events.threshold, events.off, scaled, detector.model_id)
    classes = detector.sessions.manifest.classes
    if classes is not None:  # what each class must reach, as the manifest sets it
        log.info("class thresholds (raw scores; held: how long a class must last): %s",
                 classes.summary())
    shared: list[Any] = [ConsoleSink()]
    if opts["events"]:  # --once, a batch job: re-running it gives the same file, not duplicates
        shared.append(JsonlSink(opts["events"], fresh=opts["once"]))
    if opts["notify"]:
        from edge_runtime.notify import Notifier

        urls = list(opts["notify"])  # options.py: TOML gives a string or a list, both a tuple
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
                        spool_dir=opts["mqtt_spool"], node=opts["mqtt_node"],
                        input_names=[str(spec.name) for spec in specs],
                        off_delay_s=(max(60.0, 3 * events.update_every_s)
                                     if events.update_every_s > 0 else None))
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
    if opts["once"] and RECEIVED and code == 0:  # a batch cut short must not look complete
        log.warning("interrupted (%s) before every input was read: the results hold what was "
                    "decided until then", signal.Signals(RECEIVED[0]).name)
        code = 128 + RECEIVED[0]
    return code


def main(argv: list[str] | None = None) -> None:
    """Console entry point: expected failures become one line on stderr, exit status 2."""
    try:
        command.main(args=argv, prog_name="edge-detect", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # bad option values: one line, before any model loads
        click.echo(f"edge-detect: error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except (*EXPECTED, MicError, OSError) as exc:
        click.echo(f"edge-detect: error: {one_line(exc)}", err=True)
        sys.exit(2)



if __name__ == "__main__":
    main()
