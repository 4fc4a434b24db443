//! Canvas 2D drawing of the arena: sharp on HiDPI screens, resized with the window, camera on the
//! player.

use std::f64::consts::TAU;

use crate::core::ClientCore;

use super::dom::Page;

/// World units between grid lines.
const GRID: f64 = 100.0;

pub(super) fn draw(page: &Page, core: &ClientCore, now: f64) {
    let ctx = &page.context;
    let canvas = &page.canvas;
    let ratio = page.window.device_pixel_ratio();
    let (css_width, css_height) = (f64::from(canvas.client_width()), f64::from(canvas.client_height()));
    let (width, height) = ((css_width * ratio).round() as u32, (css_height * ratio).round() as u32);
    if canvas.width() != width || canvas.height() != height {
        canvas.set_width(width);
        canvas.set_height(height);
    }
    let _ = ctx.set_transform(ratio, 0.0, 0.0, ratio, 0.0, 0.0);
    ctx.set_fill_style_str("#0b0f1a");
    ctx.fill_rect(0.0, 0.0, css_width, css_height);

    let view = core.view();
    let rules = view.rules();
    let positions = core.render_positions(now);
    let me = view.me();
    let camera = positions
        .iter()
        .find(|(id, _, _)| Some(*id) == me)
        .map_or((f64::from(rules.world_width) / 2.0, f64::from(rules.world_height) / 2.0), |(_, x, y)| {
            (f64::from(*x), f64::from(*y))
        });
    let zoom = camera_zoom(css_width, css_height, f64::from(view.view_distance()));
    ctx.save();
    let _ = ctx.translate(css_width / 2.0 - camera.0 * zoom, css_height / 2.0 - camera.1 * zoom);
    let _ = ctx.scale(zoom, zoom);

    let (world_w, world_h) = (f64::from(rules.world_width), f64::from(rules.world_height));
    ctx.set_fill_style_str("#121a2b");
    ctx.fill_rect(0.0, 0.0, world_w, world_h);
    ctx.set_stroke_style_str("#1c2740");
    ctx.set_line_width(1.0 / zoom);
    ctx.begin_path();
    let half_w = css_width / zoom / 2.0;
    let half_h = css_height / zoom / 2.0;
    let first_x = ((camera.0 - half_w) / GRID).floor().max(0.0) * GRID;
    let mut x = first_x;
    while x <= (camera.0 + half_w).min(world_w) {
        ctx.move_to(x, 0.0);
        ctx.line_to(x, world_h);
        x += GRID;
    }
    let mut y = ((camera.1 - half_h) / GRID).floor().max(0.0) * GRID;
    while y <= (camera.1 + half_h).min(world_h) {
        ctx.move_to(0.0, y);
        ctx.line_to(world_w, y);
        y += GRID;
    }
    ctx.stroke();
    ctx.set_stroke_style_str("#4f8cff");
    ctx.set_line_width(3.0 / zoom);
    ctx.stroke_rect(0.0, 0.0, world_w, world_h);

    ctx.set_fill_style_str("#f4f1e8");
    for orb in view.orbs() {
        ctx.begin_path();
        let _ = ctx.arc(f64::from(orb.x), f64::from(orb.y), f64::from(rules.orb_radius), 0.0, TAU);
        ctx.fill();
    }

    ctx.set_font("600 14px system-ui, sans-serif");
    ctx.set_text_align("center");
    for (id, x, y) in &positions {
        let Some(player) = view.players().get(id) else { continue };
        let (x, y) = (f64::from(*x), f64::from(*y));
        ctx.begin_path();
        let _ = ctx.arc(x, y, f64::from(rules.player_radius), 0.0, TAU);
        ctx.set_fill_style_str(&format!("#{:06x}", player.info.color & 0xFF_FFFF));
        ctx.fill();
        if Some(*id) == me {
            ctx.set_stroke_style_str("#ffffff");
            ctx.set_line_width(3.0);
            ctx.stroke();
        }
        ctx.set_fill_style_str("#e8ecf5");
        let _ = ctx.fill_text(&player.info.name, x, y - f64::from(rules.player_radius) - 8.0);
    }
    ctx.restore();
}

/// Shows about 900 units across the smaller side, never magnified past 1:1 on big screens, and
/// never wider than the server's view square (a wide screen zooms in rather than show an edge
/// where players would be missing).
fn camera_zoom(css_width: f64, css_height: f64, view_distance: f64) -> f64 {
    let zoom = (css_width.min(css_height) / 900.0).clamp(0.45, 1.0);
    if view_distance > 0.0 { zoom.max(css_width.max(css_height) / (2.0 * view_distance)) } else { zoom }
}
