//! Printing sessions as the SPEC's table or JSON.

use comfy_table::{Table, presets::NOTHING};
use tether_client::SessionInfo;

pub fn print_sessions(sessions: &[SessionInfo], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(sessions).unwrap_or_else(|_| "[]".into())
        );
        return;
    }
    if sessions.is_empty() {
        return;
    }
    let with_reason = sessions.iter().any(|s| s.reason.is_some());
    let mut table = Table::new();
    table.load_style(NOTHING);
    let mut header = vec![
        "Id",
        "Name",
        "ComputerName",
        "ComputerType",
        "State",
        "ConfigurationName",
        "Availability",
    ];
    if with_reason {
        header.push("Reason");
    }
    table.set_header(header);
    for s in sessions {
        let mut row = vec![
            s.id.to_string(),
            s.name.clone(),
            s.computer_name.clone(),
            s.computer_type.clone(),
            s.state.as_str().to_string(),
            s.configuration_name.clone(),
            s.availability.as_str().to_string(),
        ];
        if with_reason {
            row.push(s.reason.clone().unwrap_or_default());
        }
        table.add_row(row);
    }
    for line in table.to_string().lines() {
        println!("{}", line.trim_end());
    }
}
