# The restart benchmark's rounds (hack/bench restart's CSV: restart,sandboxes,round,
# first_answer_ms,last_adopted_ms) as a picture: for each way the next daemon comes (the
# standby takes over; a relay starts one) and each number of running sandboxes, every
# round's time from the kill to the first answered call and to the last sandbox adopted.
# gnuplot -e "data='restart.csv'; out='restart.png'" hack/plot/restart.gp
set terminal pngcairo size 900,520 font ",10"
set output out
set datafile separator ","
set title "Daemon killed (SIGKILL): from the kill to the first answer and to the last sandbox adopted"
set xlabel "running sandboxes"
set ylabel "ms after the kill"
set logscale x
set xtics ("1" 1, "10" 10, "50" 50)
set xrange [0.7:75]
set yrange [0:*]
set grid ytics
set key top left
set arrow from 0.7,1000 to 75,1000 nohead dashtype 2 lc rgb "#888888"
set label "goal: 1 s" at 0.75,1040 tc rgb "#666666"
standby(col) = (strcol(1) eq "standby") ? column(col) : 1/0
cold(col) = (strcol(1) eq "cold") ? column(col) : 1/0
jitter(x, k) = x * (1 + 0.04 * k)
plot data every ::1 using (jitter($2, -1.5)):(standby(4)) with points pt 7 ps 0.7 lc rgb "#1f77b4" title "standby takes over: first answer", \
     data every ::1 using (jitter($2, -0.5)):(standby(5)) with points pt 5 ps 0.7 lc rgb "#aec7e8" title "standby takes over: last adopted", \
     data every ::1 using (jitter($2, 0.5)):(cold(4)) with points pt 7 ps 0.7 lc rgb "#d62728" title "relay starts a daemon: first answer", \
     data every ::1 using (jitter($2, 1.5)):(cold(5)) with points pt 5 ps 0.7 lc rgb "#ff9896" title "relay starts a daemon: last adopted"
