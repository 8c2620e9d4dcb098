# Idle sandboxes' cost against their number, per runtime (hack/bench-density's CSV: runtime,
# sandboxes, start_s, memavail_kib_per_sandbox, pss_kib_per_sandbox, ..., idle_cpu_pct in column
# 14): host memory per sandbox on the left, the CPU all of them take while idle on the right.
# Each distinct runtime name is a series: "rund@BUILD" draws another build to compare with.
# gnuplot -e "data='density.csv'; out='density.png'" hack/plot/density.gp
set terminal pngcairo size 1100,440 font ",10"
set output out
set datafile separator ","
set multiplot layout 1,2 title "idle sandboxes (sleep) on one containerd, 2 cores, TCG"
set xlabel "idle sandboxes"
set grid ytics
set key top left
set style data linespoints
runtimes = system("awk -F, 'NR > 1 && !seen[$1]++ { print $1 }' " . data)
is(i, col) = (strcol(1) eq word(runtimes, i)) ? column(col) : 1/0
set ylabel "host MemAvailable drop per sandbox, MiB"
set yrange [0:*]
plot for [i=1:words(runtimes)] data every ::1 using 2:(is(i, 4) / 1024) title word(runtimes, i) lw 2 pt 7
set ylabel "CPU of all idle sandboxes, % of one core"
set yrange [0:*]
plot for [i=1:words(runtimes)] data every ::1 using 2:(is(i, 14)) title word(runtimes, i) lw 2 pt 7, \
     5 with lines dt 2 lc rgb "#888888" title "goal: 5 % for 50"
unset multiplot
