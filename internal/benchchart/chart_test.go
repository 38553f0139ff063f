package benchchart

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"path/filepath"
	"testing"
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
