# Pods started at once through CRI (hack/bench pod-start's tables, gathered as CSV: label,
# pods,per_pod_median_ms,per_pod_p99_ms,last_ready_median_ms): for each burst size, each
# runtime's median pod latency and its time from the first start to the last pod ready.
# gnuplot -e "data='bursts.csv'; out='bursts.png'" hack/plot/bursts.gp
set terminal pngcairo size 1000,520 font ",10"
set output out
set datafile separator ","
set multiplot layout 1,2 title "CRI pods started at once (RunPodSandbox to READY), containerd 1.6, 2 cores, TCG"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set logscale y
set yrange [50:300000]
set ylabel "ms"
set key top left
set xtics nomirror
set title "per pod, median"
plot data every 3::1 using 3:xtic(stringcolumn(2) . " at once") lc rgb "#2ca02c" title "runc", \
     data every 3::2 using 3 lc rgb "#ff9896" title "rund before (32e793b)", \
     data every 3::3 using 3 lc rgb "#d62728" title "rund after (9daa569, starts take turns)"
set title "first start to last pod ready, median"
plot data every 3::1 using 5:xtic(stringcolumn(2) . " at once") lc rgb "#2ca02c" title "runc", \
     data every 3::2 using 5 lc rgb "#ff9896" title "rund before (32e793b)", \
     data every 3::3 using 5 lc rgb "#d62728" title "rund after (9daa569, starts take turns)"
unset multiplot
