"""The ``music-attr-vae`` entry point.

``music-attr-vae SUBCOMMAND [--flag=value ...]`` imports only the module of the
subcommand (``music_attr_vae.commands.<name>``), so each subcommand owns its
absl flags and ``--help`` lists just those.
"""

from __future__ import annotations

import importlib
import sys

from music_attr_vae import compile_cache, lean_import

SUBCOMMANDS = {
    "prepare": "turn ABC / MIDI / folk-rnn tunes into TFRecord measure shards",
    "train": "train a MeasureVAE from a config (resumes an existing workdir)",
    "evaluate": "metrics and figures of a trained model on the test split",
    "compare": "a results table and figure grids across trained models",
    "generate": "attribute traversals from a SavedModel, as MIDI, ABC, PNG and JSON",
    "edit": "move one attribute of chosen measures of a whole tune",
}


def usage() -> str:
    lines = ["usage: music-attr-vae SUBCOMMAND [--flags]", "", "subcommands:"]
    lines += [f"  {name:<9} {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "music-attr-vae SUBCOMMAND --help lists the flags of one subcommand."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in SUBCOMMANDS:
        print(f"music-attr-vae: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    compile_cache.enable()  # before the subcommand imports TensorFlow
    lean_import.install()  # TensorFlow without the optional libraries Keras would load (2-3 s)
    module = importlib.import_module(f"music_attr_vae.commands.{name}")
    from absl import app, flags

    if any(arg in ("-h", "--help", "-help", "--helpshort") for arg in argv[2:]):
        # absl's --help lists only __main__'s key flags; show the subcommand's own.
        doc = (module.__doc__ or "").strip()
        print(f"usage: music-attr-vae {name} [--flags]\n\n{doc}\n\nflags:")
        print(flags.FLAGS.module_help(module))
        return 0

    app.run(module.main, argv=[f"music-attr-vae {name}"] + argv[2:], flags_parser=_flags_parser(name))
    return 0


def _flags_parser(name: str):
    """absl's flag parsing, with the errors it lets through as tracebacks turned into named ones.

    absl names the flag of a ``flags.Error`` itself; a ``--config.<field>``
    override of a field the config lacks raises AttributeError/KeyError from
    ml_collections instead, which is reported here with the flag at fault.
    """
    from absl import app

    def parse(argv):
        overrides = [arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--config.")]
        try:
            return app.parse_flags_with_usage(argv)
        except (AttributeError, KeyError) as err:
            if not overrides:
                raise
            field = str(err).strip("\"'")
            named = [arg for arg in overrides if field in arg[len("--config."):].split(".")] or overrides
            _parse_error(name, f"{', '.join(named)}: the config has no field {field!r} "
                               "(see configs/common.py for the fields)")
        except Exception as err:  # noqa: BLE001 - a config file runs arbitrary code while the flags are parsed
            config = [arg for arg in argv[1:] if arg.startswith("--config=")]
            what = f"{config[0]}: the config file failed to load" if config else "the flags could not be parsed"
            _parse_error(name, f"{what} ({type(err).__name__}: {err})")

    return parse


def _parse_error(name: str, message: str) -> None:
    print(f"music-attr-vae {name}: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
