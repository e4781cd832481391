#!/usr/bin/env bash
# Same settings, two versions of bncli: every result file (but meta.json, whose times differ) and
# every line printed must be byte-identical. Run from the repository root:
#   bash benchmarks/compare_outputs.sh OLD_CHECKOUT
# The old version's convergence study was `running-stats --study convergence`, saved under
# running-stats-convergence/; the new one is `convergence`, saved under convergence/.
set -u
old=$(cd "$1" && pwd); new=$(pwd); py=$new/.venv/bin/python
work=$(mktemp -d)
run() {  # run VERSION_DIR OUT ARGS...: stdout with the result paths made relative
  local src=$1 out=$2; shift 2
  (cd "$work" && PYTHONPATH=$src COLUMNS=140 $py -m bncli "$@" --out "$out" 2>&1 | sed "s#$work/##g")
}
for v in old new; do
  src=$old; [ $v = new ] && src=$new
  conv=(convergence); [ $v = old ] && conv=(running-stats --study convergence)
  {
    run "$src" $v depth-study --config "$new/configs/depth_study.yaml" --name shipped
    run "$src" $v running-stats --config "$new/configs/running_stats.yaml" --name shipped
    run "$src" $v "${conv[@]}" --config "$new/configs/convergence.yaml" --name shipped
    run "$src" $v depth-study --depth 30 --init normal --norm none --grads --erank --name diverging
    run "$src" $v sweep "$new/configs/sweeps/init_vs_norm.yaml" --no-progress
    run "$src" $v sweep "$new/configs/sweeps/momentum.yaml" --no-progress
  } > "$work/$v.txt"
  [ $v = old ] && mv "$work/old/running-stats-convergence" "$work/old/convergence"
done
sed -i 's#old/#new/#g; s#running-stats-convergence/#convergence/#g' "$work/old.txt"
status=0
diff "$work/old.txt" "$work/new.txt" > /dev/null && echo "printed output: identical ($(wc -l < "$work/new.txt") lines)" \
  || { echo "printed output differs:"; diff "$work/old.txt" "$work/new.txt" | head -20; status=1; }
n=0
while read -r f; do
  n=$((n + 1))
  cmp -s "$work/old/$f" "$work/new/$f" || { echo "differs: $f"; status=1; }
done < <(cd "$work/new" && find . -type f ! -name meta.json | sort)
echo "result files compared: $n (every file but meta.json)"
[ "$(cd "$work/old" && find . -type f ! -name meta.json | sort)" = "$(cd "$work/new" && find . -type f ! -name meta.json | sort)" ] \
  || { echo "the two versions wrote different sets of files"; status=1; }
rm -rf "$work"
exit $status
