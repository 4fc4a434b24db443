//! The whiteboard in the browser: tools, the board's pan and zoom, pointer input (mouse, pen and
//! touch through pointer events), drawing the board with everyone's cursors and strokes in
//! progress, PNG export, and keeping unsynced edits in the tab's storage.

use std::f64::consts::TAU;

use easel_protocol::Preview;
use easel_protocol::board::{Point, Stroke};
use easel_protocol::msg::MAX_PREVIEW_POINTS;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlAnchorElement, HtmlCanvasElement, PointerEvent};

use super::dom::Page;
use crate::core::ClientCore;

/// Eraser reach in screen pixels (converted to board units at the current zoom).
const ERASER_RADIUS_PX: f64 = 10.0;
/// Largest side of an exported PNG.
const EXPORT_MAX_PX: f64 = 4096.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tool {
    Pen,
    Eraser,
    Pan,
}

/// What the pointer is doing on the board.
#[derive(Debug, Clone, PartialEq)]
enum Gesture {
    Idle,
    Drawing(Vec<Point>),
    Erasing,
    /// Dragging the board: last pointer position in CSS pixels.
    Panning(f64, f64),
}

pub(super) struct BoardUi {
    pub tool: Tool,
    pub color: u32,
    pub width: u8,
    /// Board coordinates at the canvas centre, and CSS pixels per board unit.
    center: (f64, f64),
    zoom: f64,
    gesture: Gesture,
    /// What the last frame drew (board version, view, canvas size, gesture length): unchanged
    /// means the pixels on screen are still right and drawing can be skipped.
    drawn: Option<FrameKey>,
}

/// Everything a drawn frame depends on: board version, view (centre and zoom, rounded), canvas
/// size in device pixels, and the length of the stroke being drawn.
type FrameKey = (u64, (i64, i64, i64), (u32, u32), usize);

impl Default for BoardUi {
    fn default() -> Self {
        Self {
            tool: Tool::Pen,
            color: 0x1f5fd6,
            width: 4,
            center: (0.0, 0.0),
            zoom: 1.0,
            gesture: Gesture::Idle,
            drawn: None,
        }
    }
}

impl BoardUi {
    /// A pointer event on the canvas in board mode.
    pub fn pointer(&mut self, page: &Page, core: &mut ClientCore, event: &PointerEvent) {
        let (x, y) = page.canvas_point(event);
        let at = self.to_board(page, x, y);
        let board = core.whiteboard_mut();
        match event.type_().as_str() {
            "pointerdown" => {
                let _ = page.canvas.set_pointer_capture(event.pointer_id());
                let panning = self.tool == Tool::Pan || event.button() == 1 || event.button() == 2;
                self.gesture = if panning {
                    Gesture::Panning(x, y)
                } else if self.tool == Tool::Eraser {
                    board.erase_at(at, (ERASER_RADIUS_PX / self.zoom) as f32);
                    Gesture::Erasing
                } else {
                    Gesture::Drawing(vec![at])
                };
            }
            "pointermove" => {
                board.set_cursor(Some(at));
                match &mut self.gesture {
                    Gesture::Drawing(points) => {
                        if points.last() != Some(&at) {
                            points.push(at);
                        }
                        let tail = points[points.len().saturating_sub(MAX_PREVIEW_POINTS)..].to_vec();
                        board.set_drawing(Some(Preview { color: self.color, width: self.width, points: tail }));
                    }
                    Gesture::Erasing => {
                        board.erase_at(at, (ERASER_RADIUS_PX / self.zoom) as f32);
                    }
                    Gesture::Panning(last_x, last_y) => {
                        self.center.0 -= (x - *last_x) / self.zoom;
                        self.center.1 -= (y - *last_y) / self.zoom;
                        (*last_x, *last_y) = (x, y);
                    }
                    Gesture::Idle => {}
                }
            }
            "pointerup" | "pointercancel" => {
                if let Gesture::Drawing(points) = std::mem::replace(&mut self.gesture, Gesture::Idle)
                    && event.type_() == "pointerup"
                    && let Err(e) = board.draw(self.color, self.width, &points)
                {
                    page.show_local_notice(&format!("not drawn: {e}"));
                }
                board.set_drawing(None);
            }
            "pointerleave" => board.set_cursor(None),
            _ => {}
        }
        self.drawn = None;
    }

    /// Zooms by `factor` keeping the board point under (x, y) in place.
    pub fn zoom_at(&mut self, page: &Page, x: f64, y: f64, factor: f64) {
        let before = self.to_board_f(page, x, y);
        self.zoom = (self.zoom * factor).clamp(0.05, 8.0);
        let after = self.to_board_f(page, x, y);
        self.center.0 += before.0 - after.0;
        self.center.1 += before.1 - after.1;
        self.drawn = None;
    }

    pub fn invalidate(&mut self) {
        self.drawn = None;
    }

    /// Draws the board if anything visible changed since the last frame.
    pub fn draw(&mut self, page: &Page, core: &ClientCore) {
        let canvas = &page.canvas;
        let ratio = page.window.device_pixel_ratio();
        let (css_w, css_h) = (f64::from(canvas.client_width()), f64::from(canvas.client_height()));
        let size = ((css_w * ratio).round() as u32, (css_h * ratio).round() as u32);
        let gesture_len = match &self.gesture {
            Gesture::Drawing(points) => points.len(),
            _ => 0,
        };
        let view = (self.center.0 as i64, self.center.1 as i64, (self.zoom * 1e4) as i64);
        let key = (core.whiteboard().version(), view, size, gesture_len);
        if self.drawn == Some(key) && canvas.width() == size.0 && canvas.height() == size.1 {
            return;
        }
        self.drawn = Some(key);
        if canvas.width() != size.0 || canvas.height() != size.1 {
            canvas.set_width(size.0);
            canvas.set_height(size.1);
        }
        let ctx = &page.context;
        let _ = ctx.set_transform(ratio, 0.0, 0.0, ratio, 0.0, 0.0);
        ctx.set_fill_style_str("#f7f6f2");
        ctx.fill_rect(0.0, 0.0, css_w, css_h);
        ctx.save();
        let _ = ctx.translate(css_w / 2.0, css_h / 2.0);
        let _ = ctx.scale(self.zoom, self.zoom);
        let _ = ctx.translate(-self.center.0, -self.center.1);
        ctx.set_line_cap("round");
        ctx.set_line_join("round");
        for stroke in core.whiteboard().board().strokes() {
            path(ctx, &stroke.points, stroke.color, f64::from(stroke.width), 1.0);
        }
        if let Gesture::Drawing(points) = &self.gesture {
            path(ctx, points, self.color, f64::from(self.width), 1.0);
        }
        let players = core.view().players();
        for (player, presence) in core.whiteboard().presence() {
            let color = players.get(player).map_or(0x888888, |p| p.info.color);
            if let Some(preview) = &presence.drawing {
                path(ctx, &preview.points, preview.color, f64::from(preview.width), 0.6);
            }
            if let Some(cursor) = presence.cursor {
                let (x, y) = (f64::from(cursor.x), f64::from(cursor.y));
                ctx.begin_path();
                let _ = ctx.arc(x, y, 5.0 / self.zoom, 0.0, TAU);
                ctx.set_fill_style_str(&css_color(color, 1.0));
                ctx.fill();
                let name = players.get(player).map_or("?", |p| p.info.name.as_str());
                ctx.set_font(&format!("600 {:.1}px system-ui, sans-serif", 13.0 / self.zoom));
                let _ = ctx.fill_text(name, x + 8.0 / self.zoom, y - 8.0 / self.zoom);
            }
        }
        ctx.restore();
    }

    /// Downloads the whole board (not just the view) as a PNG.
    pub fn export_png(&self, page: &Page, core: &ClientCore, room: &str) -> Result<(), wasm_bindgen::JsValue> {
        let strokes: Vec<&Stroke> = core.whiteboard().board().strokes().collect();
        let (mut min_x, mut min_y, mut max_x, mut max_y) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for stroke in &strokes {
            let pad = f64::from(stroke.width);
            for p in &stroke.points {
                min_x = min_x.min(f64::from(p.x) - pad);
                min_y = min_y.min(f64::from(p.y) - pad);
                max_x = max_x.max(f64::from(p.x) + pad);
                max_y = max_y.max(f64::from(p.y) + pad);
            }
        }
        if strokes.is_empty() {
            (min_x, min_y, max_x, max_y) = (0.0, 0.0, 100.0, 100.0);
        }
        let (w, h) = (max_x - min_x + 40.0, max_y - min_y + 40.0);
        let scale = (EXPORT_MAX_PX / w.max(h)).min(2.0);
        let canvas: HtmlCanvasElement = page.document.create_element("canvas")?.dyn_into()?;
        canvas.set_width((w * scale).ceil() as u32);
        canvas.set_height((h * scale).ceil() as u32);
        let ctx: CanvasRenderingContext2d = canvas.get_context("2d")?.ok_or("no 2d canvas")?.dyn_into()?;
        ctx.set_fill_style_str("#ffffff");
        ctx.fill_rect(0.0, 0.0, w * scale, h * scale);
        let _ = ctx.scale(scale, scale);
        let _ = ctx.translate(20.0 - min_x, 20.0 - min_y);
        ctx.set_line_cap("round");
        ctx.set_line_join("round");
        for stroke in strokes {
            path(&ctx, &stroke.points, stroke.color, f64::from(stroke.width), 1.0);
        }
        let link: HtmlAnchorElement = page.document.create_element("a")?.dyn_into()?;
        link.set_href(&canvas.to_data_url_with_type("image/png")?);
        link.set_download(&format!("easel-board-{room}.png"));
        link.click();
        Ok(())
    }

    fn to_board(&self, page: &Page, x: f64, y: f64) -> Point {
        let (bx, by) = self.to_board_f(page, x, y);
        let clamp = |v: f64| v.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
        Point { x: clamp(bx), y: clamp(by) }
    }

    fn to_board_f(&self, page: &Page, x: f64, y: f64) -> (f64, f64) {
        let (w, h) = (f64::from(page.canvas.client_width()), f64::from(page.canvas.client_height()));
        (self.center.0 + (x - w / 2.0) / self.zoom, self.center.1 + (y - h / 2.0) / self.zoom)
    }
}

fn path(ctx: &CanvasRenderingContext2d, points: &[Point], color: u32, width: f64, alpha: f64) {
    let Some(first) = points.first() else { return };
    ctx.begin_path();
    ctx.move_to(f64::from(first.x), f64::from(first.y));
    if points.len() == 1 {
        // A dot: a zero-length segment with round caps.
        ctx.line_to(f64::from(first.x) + 0.01, f64::from(first.y));
    }
    for p in &points[1..] {
        ctx.line_to(f64::from(p.x), f64::from(p.y));
    }
    ctx.set_stroke_style_str(&css_color(color, alpha));
    ctx.set_line_width(width);
    ctx.stroke();
}

fn css_color(color: u32, alpha: f64) -> String {
    let (r, g, b) = ((color >> 16) & 0xff, (color >> 8) & 0xff, color & 0xff);
    format!("rgba({r},{g},{b},{alpha})")
}
