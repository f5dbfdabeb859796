"""What the fleet of execution environments shares in DynamoDB: ZEGO's rate budget (budget, slot_book, with the
local pace as its fallback) and ZEGO's health (circuit)."""
