import asyncio
from chatd_client import LLMClient, Conversation, Message, Tool


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    # Mock implementation
    return f"The weather in {city} is sunny and 72F"


def calculate(expression: str) -> str:
    """Evaluate a mathematical expression safely."""
    try:
        # Only allow safe operations
        allowed = set("0123456789+-*/.() ")
        if not all(c in allowed for c in expression):
            return "Error: Invalid characters in expression"
        return str(eval(expression))
    except Exception as e:
        return f"Error: {e}"


async def chat_with_tools():
    tools = [
        Tool.from_function(get_weather),
        Tool.from_function(calculate),
    ]

    conversation = Conversation().system(
        "You are a helpful assistant with access to weather and calculator tools."
    )
    client = LLMClient("gpt-4o-mini")

    print("Chat with tools! Type 'quit' to exit.\n")

    while True:
        user_input = input("You: ").strip()

        if user_input.lower() == "quit":
            break

        if not user_input:
            continue

        conversation.add(Message.user(user_input))

        # Use agent loop to handle tool calls automatically
        try:
            conversation, response = await client.run_agent_loop(
                conversation,
                tools=tools,
                max_rounds=5,
            )
            print(f"Assistant: {response.completion}\n")
        except Exception as e:
            print(f"Error: {e}\n")


if __name__ == "__main__":
    asyncio.run(chat_with_tools())
