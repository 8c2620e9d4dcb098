# Where a warm start's time goes, step by step (hack/bench sandbox-cost's steps CSV: step,ms,
# the median of each step over its runs, in the order the start takes them; "guest: ..."
# rows are the agent's own steps within "create the container"). With before='other.csv',
# that build's steps are drawn beside, in a panel of their own (their names may differ).
# gnuplot -e "data='steps.csv'; out='start-steps.png'; before='steps-before.csv'" hack/plot/start-steps.gp
set terminal pngcairo size 1300,600 font ",10"
set output out
set datafile separator ","
if (!exists("before")) before = ""
if (!exists("before_title")) before_title = "before"
if (!exists("after_title")) after_title = "after"
set style fill solid 0.8 border -1
set grid xtics
set xlabel "ms, median over the runs"
set yrange [*:*] reverse
set offsets 0, 0, 0.5, 0.5
stats data every ::1 using 2 nooutput name "a"
top = a_max
if (before ne "") { stats before every ::1 using 2 nooutput name "b"; top = (b_max > top ? b_max : top) }
set xrange [0:top * 1.15]
bar(name) = (name[1:6] eq "guest:" ? 0x9ecae1 : 0x3182bd)
if (before ne "") { set multiplot layout 1,2 title "A warm start's steps (ctr run --rm, TCG): rund trace" }
if (before ne "") {
  set title before_title
  plot before every ::1 using (0):($0):(0):2:($0-0.35):($0+0.35):(bar(strcol(1))):ytic(1) with boxxyerror lc rgb variable notitle, \
       before every ::1 using 2:($0):(sprintf("%.0f", $2)) with labels left offset 0.5,0 notitle
}
set title (before ne "" ? after_title : "A warm start's steps (ctr run --rm, TCG): rund trace")
plot data every ::1 using (0):($0):(0):2:($0-0.35):($0+0.35):(bar(strcol(1))):ytic(1) with boxxyerror lc rgb variable notitle, \
     data every ::1 using 2:($0):(sprintf("%.0f", $2)) with labels left offset 0.5,0 notitle
if (before ne "") { unset multiplot }
