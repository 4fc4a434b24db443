//! The board's handlers: the arena/board toggle, tools, colour and width, undo and redo,
//! export, and the pointer and wheel on the canvas (which `board::BoardUi` turns into strokes,
//! erasures and pans).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Event, PointerEvent};

use super::App;
use super::board::Tool;
use super::dom::Page;

/// Listens to the board's tools and to the pointer and wheel on the canvas.
pub(super) fn install(app: &Rc<RefCell<App>>, page: &Page) -> Result<(), JsValue> {
    let on_toggle = {
        let app = app.clone();
        move |_: Event| toggle_mode(&app)
    };
    page.listen(&page.mode_toggle, "click", on_toggle)?;

    for (button, tool) in [(&page.tool_pen, Tool::Pen), (&page.tool_eraser, Tool::Eraser), (&page.tool_pan, Tool::Pan)]
    {
        let app = app.clone();
        page.listen(button, "click", move |_: Event| select_tool(&app, tool))?;
    }
    let on_color = {
        let app = app.clone();
        move |_: Event| {
            let mut app = app.borrow_mut();
            let value = app.page.pen_color.value();
            if let Ok(color) = u32::from_str_radix(value.trim_start_matches('#'), 16) {
                app.board_ui.color = color;
            }
        }
    };
    page.listen(&page.pen_color, "input", on_color)?;
    let on_width = {
        let app = app.clone();
        move |_: Event| {
            let mut app = app.borrow_mut();
            if let Ok(width) = app.page.pen_width.value().parse::<u8>() {
                app.board_ui.width = width.clamp(1, 32);
            }
        }
    };
    page.listen(&page.pen_width, "input", on_width)?;
    let on_undo = {
        let app = app.clone();
        move |_: Event| history(&app, false)
    };
    page.listen(&page.undo_button, "click", on_undo)?;
    let on_redo = {
        let app = app.clone();
        move |_: Event| history(&app, true)
    };
    page.listen(&page.redo_button, "click", on_redo)?;
    let on_export = {
        let app = app.clone();
        move |_: Event| {
            let app = app.borrow();
            if let Some(core) = app.core.as_ref()
                && let Err(e) = app.board_ui.export_png(&app.page, core, core.room())
            {
                web_sys::console::error_2(&"export failed".into(), &e);
            }
        }
    };
    page.listen(&page.export_button, "click", on_export)?;

    for kind in ["pointerdown", "pointermove", "pointerup", "pointercancel", "pointerleave"] {
        let app = app.clone();
        let on_pointer = move |event: Event| {
            let Some(event) = event.dyn_ref::<PointerEvent>() else { return };
            let mut app = app.borrow_mut();
            if !app.board_mode {
                return;
            }
            event.prevent_default();
            let App { page, core, board_ui, .. } = &mut *app;
            if let Some(core) = core.as_mut() {
                board_ui.pointer(page, core, event);
            }
        };
        page.listen(&page.canvas, kind, on_pointer)?;
    }
    let on_wheel = {
        let app = app.clone();
        move |event: Event| {
            let Some(event) = event.dyn_ref::<web_sys::WheelEvent>() else { return };
            let mut app = app.borrow_mut();
            if !app.board_mode {
                return;
            }
            event.prevent_default();
            let rect = app.page.canvas.get_bounding_client_rect();
            let (x, y) = (event.client_x() - rect.left(), event.client_y() - rect.top());
            let factor = (-event.delta_y() * 0.0015).exp();
            let App { page, board_ui, .. } = &mut *app;
            board_ui.zoom_at(page, x, y, factor);
        }
    };
    page.listen(&page.canvas, "wheel", on_wheel)?;
    // The right button pans the board; keep the browser's menu out of the way.
    let on_menu = {
        let app = app.clone();
        move |event: Event| {
            if app.borrow().board_mode {
                event.prevent_default();
            }
        }
    };
    page.listen(&page.canvas, "contextmenu", on_menu)?;
    Ok(())
}

/// Switches between the arena and the board.
pub(super) fn toggle_mode(app: &Rc<RefCell<App>>) {
    let mut app = app.borrow_mut();
    if app.core.is_none() {
        return;
    }
    app.board_mode = !app.board_mode;
    let board_mode = app.board_mode;
    app.page.show_mode(board_mode);
    app.board_ui.invalidate();
    if let Some(core) = app.core.as_mut() {
        core.whiteboard_mut().set_cursor(None);
    }
}

pub(super) fn select_tool(app: &Rc<RefCell<App>>, tool: Tool) {
    let mut app = app.borrow_mut();
    app.board_ui.tool = tool;
    let button = match tool {
        Tool::Pen => app.page.tool_pen.clone(),
        Tool::Eraser => app.page.tool_eraser.clone(),
        Tool::Pan => app.page.tool_pan.clone(),
    };
    app.page.show_tool(&button);
}

/// Undoes (or redoes) this person's last action on the board.
pub(super) fn history(app: &Rc<RefCell<App>>, redo: bool) {
    let mut app = app.borrow_mut();
    if let Some(core) = app.core.as_mut() {
        let board = core.whiteboard_mut();
        let _ = if redo { board.redo() } else { board.undo() };
    }
    app.hud_refreshed_at = f64::MIN;
}
