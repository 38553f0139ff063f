// Package benchchart draws the benchmark's line charts as PNG with the
// standard library alone: a few series of points over a linear axis, with
// an optional spread (lowest to highest of several runs) per point and
// target marks. It is meant for docs/perf, not for general plotting.
package benchchart

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strconv"
)

// Point is one measurement; Lo and Hi, when they differ, are the spread
// over runs, drawn as a whisker.
type Point struct {
	X, Y   float64
	Lo, Hi float64
}

// Series is one line of the chart.
type Series struct {
	Name   string
	Color  color.RGBA
	Points []Point
}

// Mark is a target: a short red bar at (X, Y) with a label.
type Mark struct {
	X, Y  float64
	Label string
}

// Chart is a line chart. The y axis starts at 0, or with LogY spans the
// decades of the values (for latencies, whose median and tail differ by
// orders of magnitude); the x axis spans the points (and XTicks, which
// default to the points' x values).
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	Marks                 []Mark
	XTicks                []float64
	LogY                  bool
	Width, Height         int // default 720 × 420
}

// Colors are distinct line colours, in the order series usually take them.
var Colors = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}, {140, 86, 75, 255},
}

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{225, 225, 225, 255}
	red   = color.RGBA{214, 39, 40, 255}
)

const (
	scale  = 2 // font pixels are scale × scale image pixels
	left   = 80
	right  = 20
	top    = 40
	bottom = 60
)

// frame maps data coordinates to pixels.
type frame struct {
	x0, x1 float64
	y0, y1 float64 // y0 is 0 unless logY
	logY   bool
	w, h   int
}

func (f frame) px(x, y float64) (int, int) {
	pw, ph := float64(f.w-left-right), float64(f.h-top-bottom)
	fx := 0.5
	if f.x1 > f.x0 {
		fx = (x - f.x0) / (f.x1 - f.x0)
	}
	fy := y / f.y1
	if f.logY {
		fy = (math.Log10(math.Max(y, f.y0)) - math.Log10(f.y0)) / (math.Log10(f.y1) - math.Log10(f.y0))
	}
	return left + int(math.Round(fx*pw)), f.h - bottom - int(math.Round(fy*ph))
}

// yTicks are the y axis' grid values: five even steps, or each decade.
func (f frame) yTicks() []float64 {
	var out []float64
	if f.logY {
		for v := f.y0; v <= f.y1*(1+1e-9); v *= 10 {
			out = append(out, v)
		}
		return out
	}
	for i := 0; i <= 5; i++ {
		out = append(out, float64(i)*f.y1/5)
	}
	return out
}

func (c *Chart) frame() frame {
	f := frame{x0: math.Inf(1), x1: math.Inf(-1), w: c.Width, h: c.Height}
	if f.w == 0 {
		f.w, f.h = 720, 420
	}
	ymax, ymin := 0.0, math.Inf(1)
	see := func(x, y float64) {
		f.x0, f.x1, ymax = math.Min(f.x0, x), math.Max(f.x1, x), math.Max(ymax, y)
		if y > 0 {
			ymin = math.Min(ymin, y)
		}
	}
	for _, s := range c.Series {
		for _, p := range s.Points {
			see(p.X, math.Max(p.Y, p.Hi))
			if p.Lo > 0 && p.Lo < p.Y {
				see(p.X, p.Lo)
			}
		}
	}
	for _, m := range c.Marks {
		see(m.X, m.Y)
	}
	for _, x := range c.XTicks {
		see(x, 0)
	}
	if math.IsInf(f.x0, 0) {
		f.x0, f.x1 = 0, 1
	}
	f.y1 = NiceCeil(ymax * 1.05)
	if c.LogY {
		f.logY = true
		if math.IsInf(ymin, 0) {
			ymin = ymax
		}
		f.y0 = math.Pow(10, math.Floor(math.Log10(ymin)))
		f.y1 = math.Pow(10, math.Ceil(math.Log10(ymax*1.05)))
		if f.y1 <= f.y0 {
			f.y1 = f.y0 * 10
		}
	}
	return f
}

// Render draws the chart.
func (c *Chart) Render() *image.RGBA {
	f := c.frame()
	img := image.NewRGBA(image.Rect(0, 0, f.w, f.h))
	fill(img, img.Bounds(), white)
	c.drawAxes(img, f)
	for i, s := range c.Series {
		col := s.Color
		if col.A == 0 {
			col = Colors[i%len(Colors)]
		}
		c.drawSeries(img, f, s, col)
		lx, ly := left+10, top+8+i*(glyphH*scale+6)
		fill(img, image.Rect(lx, ly+2, lx+14, ly+glyphH*scale-2), col)
		drawText(img, lx+20, ly, s.Name, black)
	}
	for _, m := range c.Marks {
		x, y := f.px(m.X, m.Y)
		fill(img, image.Rect(x-10, y-1, x+11, y+2), red)
		lx := x + 14
		if w := textWidth(m.Label) * scale; lx+w > f.w {
			lx = x - 14 - w // no room on the right: on the left
		}
		drawText(img, lx, y-glyphH*scale/2, m.Label, red)
	}
	drawText(img, (f.w-textWidth(c.Title)*scale)/2, 12, c.Title, black)
	return img
}

func (c *Chart) drawAxes(img *image.RGBA, f frame) {
	x0, yb := f.px(f.x0, f.y0)
	x1, yt := f.px(f.x1, f.y1)
	for _, v := range f.yTicks() {
		_, y := f.px(f.x0, v)
		fill(img, image.Rect(x0, y, x1+1, y+1), grey)
		label := Format(v)
		drawText(img, x0-8-textWidth(label)*scale, y-glyphH*scale/2, label, black)
	}
	ticks := c.XTicks
	if len(ticks) == 0 && len(c.Series) > 0 {
		for _, p := range c.Series[0].Points {
			ticks = append(ticks, p.X)
		}
	}
	for _, v := range ticks {
		x, _ := f.px(v, f.y0)
		fill(img, image.Rect(x, yb, x+1, yb+6), black)
		label := Format(v)
		drawText(img, x-textWidth(label)*scale/2, yb+10, label, black)
	}
	fill(img, image.Rect(x0, yt, x0+1, yb+1), black)
	fill(img, image.Rect(x0, yb, x1+1, yb+1), black)
	drawText(img, (x0+x1-textWidth(c.XLabel)*scale)/2, f.h-22, c.XLabel, black)
	drawText(img, 8, top-20, c.YLabel, black)
}

func (c *Chart) drawSeries(img *image.RGBA, f frame, s Series, col color.RGBA) {
	for i, p := range s.Points {
		x, y := f.px(p.X, p.Y)
		if p.Lo != p.Hi {
			_, ylo := f.px(p.X, p.Lo)
			_, yhi := f.px(p.X, p.Hi)
			fill(img, image.Rect(x, yhi, x+1, ylo+1), col)
			fill(img, image.Rect(x-4, yhi, x+5, yhi+1), col)
			fill(img, image.Rect(x-4, ylo, x+5, ylo+1), col)
		}
		fill(img, image.Rect(x-3, y-3, x+4, y+4), col)
		if i > 0 {
			px, py := f.px(s.Points[i-1].X, s.Points[i-1].Y)
			line(img, px, py, x, y, col)
		}
	}
}

// EncodePNG returns the chart as PNG.
func (c *Chart) EncodePNG() ([]byte, error) {
	var b bytes.Buffer
	if err := png.Encode(&b, c.Render()); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Save writes the chart as PNG to path.
func (c *Chart) Save(path string) error {
	b, err := c.EncodePNG()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// NiceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten, so that the
// y axis' five steps are round numbers.
func NiceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// Format writes an axis value briefly: 10000 as 10k, 0.5 as 0.5.
func Format(v float64) string {
	switch {
	case v != 0 && math.Abs(v) >= 1e6 && math.Mod(v, 1e5) == 0:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v != 0 && math.Abs(v) >= 1e3 && math.Mod(v, 100) == 0:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// line draws a two-pixel-wide straight line (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		fill(img, image.Rect(x0, y0, x0+2, y0+2), c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e // both steps decide on the error before either
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		if g, ok := glyph(r); ok {
			for row, bits := range g {
				for col, b := range bits {
					if b == '#' {
						px, py := x+col*scale, y+row*scale
						fill(img, image.Rect(px, py, px+scale, py+scale), c)
					}
				}
			}
		}
		x += (glyphW + 1) * scale
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

// String describes the chart's data, for logs and tests.
func (c *Chart) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s (%s vs %s)", c.Title, c.YLabel, c.XLabel)
	for _, s := range c.Series {
		fmt.Fprintf(&b, "; %s:", s.Name)
		for _, p := range s.Points {
			fmt.Fprintf(&b, " %s=%s", Format(p.X), strconv.FormatFloat(p.Y, 'g', 4, 64))
		}
	}
	return b.String()
}
