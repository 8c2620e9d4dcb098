# The cold-daemon benchmark's rounds (hack/bench cold-daemon's CSV: round,cold_ms,warm_ms,
# cold_sandbox_ms,warm_sandbox_ms) as a picture: each round's first start by a new daemon
# beside the warm start after it, whole `ctr run --rm` and its sandbox part (rund trace).
# With before='other.csv', that run's cold and warm starts are drawn too, dashed.
# gnuplot -e "data='cold-daemon.csv'; out='cold-daemon.png'" hack/plot/cold-daemon.gp
set terminal pngcairo size 900,560 font ",10"
set output out
set datafile separator ","
set title "First start of a new daemon vs a warm start (ctr run --rm, TCG)"
set xlabel "round"
set ylabel "ms"
set yrange [0:*]
set grid ytics
set key outside bottom center horizontal maxrows 3
stats data every ::1 using 3 nooutput name "warm"
set arrow from graph 0, first 2 * warm_median to graph 1, first 2 * warm_median nohead dashtype 2 lc rgb "#888888"
set label "goal: 2 x the warm median" at graph 0.02, first 2 * warm_median * 1.03 tc rgb "#666666"
if (!exists("before")) before = ""
plot data every ::1 using 1:2 with linespoints pt 7 lc rgb "#d62728" title "cold daemon: ctr run --rm", \
     data every ::1 using 1:4 with linespoints pt 6 lc rgb "#ff9896" title "cold daemon: sandbox start (rund trace)", \
     data every ::1 using 1:3 with linespoints pt 7 lc rgb "#1f77b4" title "warm: ctr run --rm", \
     data every ::1 using 1:5 with linespoints pt 6 lc rgb "#aec7e8" title "warm: sandbox start (rund trace)", \
     (before eq "" ? 1/0 : before) every ::1 using 1:2 with linespoints dashtype 2 pt 7 lc rgb "#8c564b" title "before: cold daemon", \
     (before eq "" ? 1/0 : before) every ::1 using 1:3 with linespoints dashtype 2 pt 7 lc rgb "#7f7f7f" title "before: warm"
