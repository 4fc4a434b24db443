//! The player's controls: the keys held (layout-independent codes: `KeyW`, `ArrowUp`, …) and the
//! on-screen stick, and the key presses that are commands (chat, board, tools, undo, overlay).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Event, KeyboardEvent, PointerEvent};

use super::board::Tool;
use super::board_handlers::{history, select_tool, toggle_mode};
use super::dom::{self, Page};
use super::{App, poll_network};

/// What the player holds.
#[derive(Default)]
pub(super) struct Controls {
    keys: HashSet<String>,
    /// Direction from the on-screen stick.
    stick: (i8, i8),
}

impl Controls {
    /// The direction held: the keys', else the stick's.
    pub fn held(&self) -> (i8, i8) {
        let keys = dom::direction_of_keys(self.keys.iter().map(String::as_str));
        if keys != (0, 0) { keys } else { self.stick }
    }
}

/// Listens to the keyboard, the window's focus and the stick.
pub(super) fn install(app: &Rc<RefCell<App>>, page: &Page) -> Result<(), JsValue> {
    let on_key_down = {
        let app = app.clone();
        move |event: Event| {
            let Some(event) = event.dyn_ref::<KeyboardEvent>() else { return };
            key_down(&app, event);
        }
    };
    page.listen(&page.window, "keydown", on_key_down)?;

    let on_key_up = {
        let app = app.clone();
        move |event: Event| {
            if let Some(event) = event.dyn_ref::<KeyboardEvent>() {
                app.borrow_mut().controls.keys.remove(&event.code());
                // A new direction (or a stop) goes out now, not at the next poll.
                poll_network(&app);
            }
        }
    };
    page.listen(&page.window, "keyup", on_key_up)?;

    // Keys released while the window is not focused never send keyup: forget them all.
    let on_blur = {
        let app = app.clone();
        move |_: Event| app.borrow_mut().controls = Controls::default()
    };
    page.listen(&page.window, "blur", on_blur)?;

    for kind in ["pointerdown", "pointermove", "pointerup", "pointercancel"] {
        let app = app.clone();
        let on_stick = move |event: Event| {
            let Some(event) = event.dyn_ref::<PointerEvent>() else { return };
            event.prevent_default();
            let mut app = app.borrow_mut();
            app.controls.stick = app.page.stick_direction(event);
        };
        page.listen(&page.joystick, kind, on_stick)?;
    }
    Ok(())
}

fn key_down(app_rc: &Rc<RefCell<App>>, event: &KeyboardEvent) {
    let mut app = app_rc.borrow_mut();
    if app.page.typing_in(event) {
        if event.code() == "Escape" {
            let _ = app.page.chat_input.blur();
        }
        return;
    }
    let code = event.code();
    let command = event.ctrl_key() || event.meta_key();
    if app.core.is_some() && command && matches!(code.as_str(), "KeyZ" | "KeyY") {
        event.prevent_default();
        let redo = code == "KeyY" || event.shift_key();
        drop(app);
        history(app_rc, redo);
        return;
    }
    if app.core.is_some() && !command && code == "Backquote" {
        let hidden = app.page.net_debug.hidden();
        app.page.net_debug.set_hidden(!hidden);
        return;
    }
    if app.core.is_some() && !command && code == "KeyB" {
        drop(app);
        toggle_mode(app_rc);
        return;
    }
    if app.board_mode && !command {
        let tool = match code.as_str() {
            "KeyP" => Some(Tool::Pen),
            "KeyE" => Some(Tool::Eraser),
            "KeyH" => Some(Tool::Pan),
            _ => None,
        };
        if let Some(tool) = tool {
            drop(app);
            select_tool(app_rc, tool);
            return;
        }
    }
    if app.core.is_some() && code == "Enter" {
        event.prevent_default();
        let _ = app.page.chat_input.focus();
        return;
    }
    if dom::direction_of_keys(std::iter::once(code.as_str())) != (0, 0) {
        // Arrow keys would otherwise scroll the page.
        event.prevent_default();
        app.controls.keys.insert(code);
        drop(app);
        // A new direction goes out now, not at the next poll.
        poll_network(app_rc);
    }
}
