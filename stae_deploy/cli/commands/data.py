"""``stae data``: fetch, verify and list the real footage clips."""
from __future__ import annotations

import argparse
import json

from stae_deploy.stae_ref.footage import CLIPS, cache_dir, fetch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The clips, the cache folder and --json."""
    parser.add_argument("clips", nargs="*", default=sorted(CLIPS),
                        help=f"clips to fetch (known: {', '.join(sorted(CLIPS))})")
    parser.add_argument("--cache-dir", default=None,
                        help="where clips are cached (default: $STAE_DATA_DIR or "
                             "~/.cache/stae-deploy/footage)")
    parser.add_argument("--json", action="store_true", help="print {clip name: cached path}")


def run(args: argparse.Namespace) -> int:
    """Fetch (or find cached and verified) each clip; list them, or print {name: path} JSON."""
    paths = {name: str(fetch(name, args.cache_dir)) for name in args.clips}
    if args.json:
        print(json.dumps(paths, indent=2))
        return 0
    print(f"footage cache: {cache_dir(args.cache_dir)}")
    for name, path in paths.items():
        clip = CLIPS[name]
        start, stop = clip.usable_frames
        print(f"  {name:<10} {path}\n             {clip.description}; frames {start}..{stop - 1} "
              f"usable; {clip.license}; from {clip.package}=={clip.version}")
    return 0
