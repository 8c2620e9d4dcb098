# sandbox-cost before and after issue 26 items 3 and 5, run by run (docs/bench/node-protections.csv:
# order,build,runc_median_ms,rund_median_ms,rund_p99_ms,daemon_cpu_ms,sandbox_pss_kib): the start's
# median beside runc's on the left, an idle sandbox's PSS on the right, "now" and "before" alternating.
# gnuplot -e "data='node-protections.csv'; out='node-protections.png'" hack/plot/node-protections.gp
set terminal pngcairo size 1000,420 font ",10"
set output out
set datafile separator ","
set multiplot layout 1,2 title "ctr run --rm true, and an idle sandbox, before (865a7fe) and now (8a88541), runs in the order made"
set xlabel "run"
set xtics 1
set xrange [0.5:5.5]
set grid ytics
set key center right
now(col) = (strcol(2) eq "now") ? column(col) : 1/0
before(col) = (strcol(2) eq "before") ? column(col) : 1/0
set ylabel "median ms (20 starts)"
set yrange [0:*]
plot data every ::1 using 1:(now(4)) with points pt 7 ps 1.2 lc rgb "#1f77b4" title "rund now", \
     data every ::1 using 1:(before(4)) with points pt 5 ps 1.2 lc rgb "#d62728" title "rund before", \
     data every ::1 using 1:(now(3)) with points pt 6 ps 1.2 lc rgb "#1f77b4" title "runc (with now)", \
     data every ::1 using 1:(before(3)) with points pt 4 ps 1.2 lc rgb "#d62728" title "runc (with before)"
set ylabel "KiB PSS per idle sandbox (median of 10)"
set yrange [43000:44200]
plot data every ::1 using 1:(now(7)) with points pt 7 ps 1.2 lc rgb "#1f77b4" title "now", \
     data every ::1 using 1:(before(7)) with points pt 5 ps 1.2 lc rgb "#d62728" title "before"
unset multiplot
