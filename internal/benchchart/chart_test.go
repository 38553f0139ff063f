package benchchart

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"path/filepath"
	"testing"
	"time"
)

func TestNiceCeil(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{
		{0, 1}, {-3, 1}, {0.7, 1}, {1, 1}, {1.3, 2}, {2.1, 2.5}, {3, 5}, {7, 10}, {10.5, 20}, {480, 500}, {0.013, 0.02},
	} {
		if got := NiceCeil(c.in); got != c.want {
			t.Errorf("NiceCeil(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{{0, "0"}, {0.5, "0.5"}, {25, "25"}, {1000, "1k"}, {2500, "2.5k"}, {10000, "10k"}, {1234, "1234"}, {2e6, "2M"}} {
		if got := Format(c.in); got != c.want {
			t.Errorf("Format(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func testChart() *Chart {
	return &Chart{
		Title: "route latency", XLabel: "events/s", YLabel: "ms",
		Series: []Series{
			{Name: "p50", Points: []Point{{X: 1000, Y: 1}, {X: 5000, Y: 2}, {X: 10000, Y: 3}}},
			{Name: "p99", Points: []Point{{X: 1000, Y: 2, Lo: 1.5, Hi: 2.5}, {X: 5000, Y: 4, Lo: 3, Hi: 6}, {X: 10000, Y: 8, Lo: 7, Hi: 9}}},
		},
		Marks: []Mark{{X: 5000, Y: 5, Label: "target"}},
	}
}

func rgba(img image.Image, x, y int) color.RGBA {
	r, g, b, a := img.At(x, y).RGBA()
	return color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
}

// Each point is drawn where the axes put it, in its series' colour, and the
// spread as a whisker reaching Lo and Hi.
func TestRenderDrawsPointsWhereTheAxesPutThem(t *testing.T) {
	c := testChart()
	f := c.frame()
	if f.y1 != 10 {
		t.Fatalf("y axis to %v, want 10 (the highest Hi, 9, rounded up)", f.y1)
	}
	img := c.Render()
	for i, s := range c.Series {
		for _, p := range s.Points {
			x, y := f.px(p.X, p.Y)
			if got := rgba(img, x, y); got != Colors[i] {
				t.Errorf("%s at %v: pixel %v, want %v", s.Name, p, got, Colors[i])
			}
		}
	}
	p := c.Series[1].Points[1]
	x, _ := f.px(p.X, 0)
	for _, v := range []float64{p.Lo, p.Hi} {
		_, y := f.px(p.X, v)
		if got := rgba(img, x, y); got != Colors[1] {
			t.Errorf("whisker end %v: pixel %v", v, got)
		}
	}
	mx, my := f.px(5000, 5)
	if got := rgba(img, mx-8, my); got != red {
		t.Errorf("target mark: pixel %v, want red", got)
	}
	if got := rgba(img, 2, 2); got != white {
		t.Errorf("background %v", got)
	}
}

func TestSaveWritesAPNGOfTheRequestedSize(t *testing.T) {
	c := testChart()
	c.Width, c.Height = 600, 300
	path := filepath.Join(t.TempDir(), "c.png")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	b, _ := c.EncodePNG()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 600 || img.Bounds().Dy() != 300 {
		t.Fatalf("size %v", img.Bounds())
	}
}

func TestTextIsDrawn(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 40, 20))
	fill(img, img.Bounds(), white)
	drawText(img, 0, 0, "1", black)
	// "1": .#. / ##. / .#. / .#. / ### at scale 2.
	if rgba(img, 2, 0) != black || rgba(img, 0, 0) != white || rgba(img, 0, 8) != black {
		t.Fatal("glyph '1' not drawn as its bitmap")
	}
	if textWidth("ab") != 7 || textWidth("") != 0 {
		t.Fatalf("textWidth")
	}
	for r, g := range glyphs {
		for _, row := range g {
			if len(row) != glyphW {
				t.Errorf("glyph %q row %q is not %d wide", r, row, glyphW)
			}
		}
	}
}

// A log y axis spans the decades of the values, so a median of 0.1 ms and
// a tail of 50 ms are both readable.
func TestLogYSpansTheDecadesOfTheValues(t *testing.T) {
	c := &Chart{LogY: true, Series: []Series{{Name: "p", Points: []Point{{X: 1, Y: 0.1}, {X: 2, Y: 1}, {X: 3, Y: 50}}}}}
	f := c.frame()
	if f.y0 != 0.1 || f.y1 != 100 {
		t.Fatalf("y axis %v..%v, want 0.1..100", f.y0, f.y1)
	}
	ticks := f.yTicks()
	if len(ticks) != 4 || ticks[0] != 0.1 || ticks[3] < 99.9 || ticks[3] > 100.1 {
		t.Fatalf("ticks %v, want the decades 0.1..100", ticks)
	}
	_, bottomY := f.px(1, 0.1)
	_, topY := f.px(1, 100)
	_, oneY := f.px(1, 1)
	if want := bottomY + (topY-bottomY)/3; oneY < want-1 || oneY > want+1 {
		t.Errorf("1 drawn at y=%d, want a third of the way up (%d)", oneY, want)
	}
	img := c.Render()
	x, y := f.px(3, 50)
	if rgba(img, x, y) != Colors[0] {
		t.Errorf("point 50 not drawn at (%d, %d)", x, y)
	}
}

func TestAMarkAtTheRightEdgeIsLabelledOnItsLeft(t *testing.T) {
	c := &Chart{Series: []Series{{Name: "p", Points: []Point{{X: 0, Y: 1}, {X: 10, Y: 2}}}},
		Marks: []Mark{{X: 10, Y: 1, Label: "target"}}}
	f := c.frame()
	img := c.Render()
	x, y := f.px(10, 1)
	found := false
	for px := x - 14 - textWidth("target")*scale; px < x-14; px++ {
		for py := y - glyphH*scale/2; py < y+glyphH*scale/2; py++ {
			if rgba(img, px, py) == red {
				found = true
			}
		}
	}
	if !found {
		t.Error("no label left of the mark")
	}
}

// Lines of every slope end at their end point (a Bresenham step that
// decided on a half-updated error once looped forever on steep lines).
func TestLinesOfEverySlopeReachTheirEnd(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 200, 200))
	for _, end := range [][2]int{{199, 0}, {199, 50}, {199, 199}, {150, 199}, {100, 199}, {101, 3}, {0, 199}, {3, 198}} {
		done := make(chan struct{})
		go func() { line(img, 100, 100, end[0], end[1], black); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("line to %v never ended", end)
		}
		if rgba(img, end[0], end[1]) != black {
			t.Errorf("line to %v does not reach it", end)
		}
	}
}
