# Idle sandboxes' cost against their number, per runtime (hack/bench-density's CSV: runtime,
# sandboxes, start_s, memavail_kib_per_sandbox, pss_kib_per_sandbox, ..., idle_cpu_pct in column
# 14): host memory per sandbox on the left, the CPU all of them take while idle on the right
# (the machine's total beyond its baseline, and for "rund" also its own processes alone: the
# total holds kernel threads, such as this host's kdamond, that grow with memory in use).
# Each distinct runtime name is a series: "rund@BUILD" draws another build to compare with.
# gnuplot -e "data='density.csv'; out='density.png'" hack/plot/density.gp
set terminal pngcairo size 1100,440 font ",10"
set output out
set datafile separator ","
set multiplot layout 1,2 title "idle sandboxes (sleep) on one containerd, 2 cores, TCG"
set xlabel "idle sandboxes"
set grid ytics
set key center right noenhanced
set style data linespoints
runtimes = system("awk -F, 'NR > 1 && !seen[$1]++ { print $1 }' " . data)
is(i, col) = (strcol(1) eq word(runtimes, i)) ? column(col) : 1/0
set ylabel "host MemAvailable drop per sandbox, MiB"
set yrange [0:*]
plot for [i=1:words(runtimes)] data every ::1 using 2:(is(i, 4) / 1024) title word(runtimes, i) lw 2 pt 7
set ylabel "CPU of all idle sandboxes, % of one core"
set yrange [0:*]
set key top left noenhanced
own(col) = (strcol(1) eq "rund") ? column(15) + column(16) + column(17) + column(18) + column(19) : 1/0
plot for [i=1:words(runtimes)] data every ::1 using 2:(is(i, 14)) title word(runtimes, i) lw 2 pt 7, \
     data every ::1 using 2:(own(0)) title "rund: its processes only" lw 2 dt 3 pt 6 lc rgb "#56b4e9", \
     5 with lines dt 2 lc rgb "#888888" title "goal for 50"
unset multiplot
