#!/usr/bin/env bash
# Same settings, two versions of bncli: every result file (but meta.json, whose times differ) and
# every line printed must be byte-identical. Run from the repository root:
#   bash benchmarks/compare_outputs.sh OLD_CHECKOUT
# (for example `git worktree add /tmp/old HEAD~5`). It runs the shipped configs, a diverging run
# with every optional statistic, and the shipped sweeps, with this checkout's .venv.
# Config fields added since OLD_CHECKOUT are lines at the end of every config.yaml and setting
# columns of summary.csv and aggregate.csv: such a file counts as identical when, with those
# fields left out, every other line and cell is (the fields are named).
set -u
old=$(cd "$1" && pwd); new=$(pwd); py=$new/.venv/bin/python
work=$(mktemp -d)
run() {  # run VERSION_DIR OUT ARGS...: stdout and stderr with the result paths made relative
  local src=$1 out=$2; shift 2
  (cd "$work" && PYTHONPATH=$src COLUMNS=140 $py -m bncli "$@" --out "$out" 2>&1 | sed "s#$work/##g")
}
for v in old new; do
  src=$old; [ $v = new ] && src=$new
  {
    for c in depth_study depth_study_conv depth_study_resnet; do
      run "$src" $v depth-study --config "$new/configs/$c.yaml" --name "$c"
    done
    run "$src" $v running-stats --config "$new/configs/running_stats.yaml" --name shipped
    run "$src" $v convergence --config "$new/configs/convergence.yaml" --name shipped
    run "$src" $v depth-study --depth 30 --init normal --norm none --grads --erank --name diverging
    run "$src" $v depth-study --arch resnet --blocks 3 --channels 16 --image-size 8 --grads --erank --name resnet-grads
    for s in init_vs_norm momentum resnet_norms; do
      run "$src" $v sweep "$new/configs/sweeps/$s.yaml" --no-progress
    done
  } > "$work/$v.txt"
done
sed -i 's#old/#new/#g' "$work/old.txt"
fields() {  # the depth study's config fields in the bncli at $1 (run from $work: the cwd comes first on sys.path)
  (cd "$work" && PYTHONPATH=$1 $py -c "from bncli.studies.depth import DepthConfig; print(' '.join(DepthConfig.FIELDS))")
}
added=$(comm -13 <(fields "$old" | tr ' ' '\n' | sort) <(fields "$new" | tr ' ' '\n' | sort) | tr '\n' ' ')
same_but_added() {  # same_but_added OLD_FILE NEW_FILE: equal once the added fields are left out?
  ADDED=$added $py - "$1" "$2" <<'PY'
import csv, os, sys
old, new = sys.argv[1:]
added = set(os.environ["ADDED"].split())
if old.endswith(".yaml"):
    keep = [line for line in open(new).read().splitlines() if line.split(":")[0] not in added]
    sys.exit(keep != open(old).read().splitlines())
rows = list(csv.reader(open(new)))
drop = {i for i, name in enumerate(rows[0]) if name in added}
sys.exit([[c for i, c in enumerate(r) if i not in drop] for r in rows] != list(csv.reader(open(old))))
PY
}
status=0
diff "$work/old.txt" "$work/new.txt" > /dev/null && echo "printed output: identical ($(wc -l < "$work/new.txt") lines)" \
  || { echo "printed output differs:"; diff "$work/old.txt" "$work/new.txt" | head -20; status=1; }
n=0; extended=0
while read -r f; do
  n=$((n + 1))
  cmp -s "$work/old/$f" "$work/new/$f" && continue
  case "$f" in
    */config.yaml | */summary.csv | */aggregate.csv)
      if [ -n "$added" ] && same_but_added "$work/old/$f" "$work/new/$f"; then extended=$((extended + 1)); continue; fi ;;
  esac
  echo "differs: $f"; status=1
done < <(cd "$work/new" && find . -type f ! -name meta.json | sort)
echo "result files compared: $n (every file but meta.json)"
[ "$extended" = 0 ] || echo "of which $extended identical once the fields new since $1 are left out: $added"
[ "$(cd "$work/old" && find . -type f ! -name meta.json | sort)" = "$(cd "$work/new" && find . -type f ! -name meta.json | sort)" ] \
  || { echo "the two versions wrote different sets of files"; status=1; }
rm -rf "$work"
exit $status
