"""``stae data``: fetch, verify and list the real footage clips."""
from __future__ import annotations

import argparse
import json

from stae_deploy.stae_ref.footage import CLIPS, CORE_CLIPS, cache_dir, fetch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The clips, the cache folder and --json."""
    parser.add_argument("clips", nargs="*", default=list(CORE_CLIPS),
                        help=f"clips to fetch (default: {' '.join(CORE_CLIPS)}; known: "
                             f"{', '.join(sorted(CLIPS))}; 'all' fetches every one)")
    parser.add_argument("--cache-dir", default=None,
                        help="where clips are cached (default: $STAE_DATA_DIR or "
                             "~/.cache/stae-deploy/footage)")
    parser.add_argument("--json", action="store_true", help="print {clip name: cached path}")


def run(args: argparse.Namespace) -> int:
    """Fetch (or find cached and verified) each clip; list them, or print {name: path} JSON."""
    names = sorted(CLIPS) if args.clips == ["all"] else args.clips
    paths = {name: str(fetch(name, args.cache_dir)) for name in names}
    if args.json:
        print(json.dumps(paths, indent=2))
        return 0
    print(f"footage cache: {cache_dir(args.cache_dir)}")
    for name, path in paths.items():
        clip = CLIPS[name]
        start, stop = clip.usable_frames
        role = "; evaluation only (never trained on)" if clip.evaluation_only else ""
        print(f"  {name:<12} {path}\n             {clip.description}; frames {start}..{stop - 1} "
              f"usable{role}; {clip.license}; from {clip.registry} {clip.package}=={clip.version}")
    return 0
